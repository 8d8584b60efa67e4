# rollbot's container image.
#   docker build -t rollbot .
# The builder matches the toolchain rollbot is built and tested with
# (Rust 1.95 on Debian bookworm); the runtime is the same Debian release, so
# the glibc the binary was linked against is the one it runs on.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# Dependencies are downloaded in their own layer (stub sources let cargo read
# the manifest), so a source change does not download them again.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo fetch --locked
COPY . .
RUN cargo build --release --locked --bin rollbot \
    && install -m 0755 target/release/rollbot /usr/local/bin/rollbot

FROM debian:bookworm-slim
# CA certificates for Slack, Discord, Prometheus and the Kubernetes API over
# TLS; git for the gitops backend.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 rollbot \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/rollbot --shell /usr/sbin/nologin rollbot \
    && mkdir -p /var/lib/rollbot /etc/rollbot \
    && chown rollbot:rollbot /var/lib/rollbot
COPY --from=builder /usr/local/bin/rollbot /usr/local/bin/rollbot
USER 10001:10001
WORKDIR /var/lib/rollbot
EXPOSE 8080
ENTRYPOINT ["rollbot"]
CMD ["serve", "--config", "/etc/rollbot/rollbot.toml"]
