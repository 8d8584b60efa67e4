#!/usr/bin/env bash
# Installs what rollbot's tests need on a fresh Debian machine, then runs the
# whole test suite. Safe to run again: installed tools are kept.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# A real Prometheus (and promtool for backfilled history) for the controller tests.
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v sh >/dev/null 2>&1 || need_apt+=(dash)
# PostgreSQL and Node for the real Unleash server of the unleash backend's tests.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
# A real container registry (the CNCF distribution registry) for the rollback
# capability tests, and htpasswd (bcrypt) for its basic-auth variant.
[ -x /usr/bin/docker-registry ] || need_apt+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need_apt+=(apache2-utils)
# openssl signs the JWTs of the registry's token-auth variant.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# PyYAML reads deploy/'s manifests in the test that checks them against the binary.
python3 -c 'import yaml' >/dev/null 2>&1 || need_apt+=(python3-yaml)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: missing ${need_apt[*]}; run as root or install them" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# unleash-server 6.10.1 is the newest that runs on Debian's Node 20; kept
# outside the repository so later runs reuse it.
unleash_dir="${ROLLBOT_UNLEASH_DIR:-/opt/rollbot-test/unleash}"
if [ ! -f "$unleash_dir/node_modules/unleash-server/package.json" ]; then
  mkdir -p "$unleash_dir"
  [ -f "$unleash_dir/package.json" ] || echo '{"private": true}' > "$unleash_dir/package.json"
  npm install --prefix "$unleash_dir" --no-audit --no-fund --loglevel=error unleash-server@6.10.1
fi

# The Kubernetes tests use the real kubectl as the reference client.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "scripts/test.sh: kubectl is missing; install it (https://kubernetes.io/docs/tasks/tools/ or apt package kubectl from pkgs.k8s.io)" >&2
  exit 1
fi

cargo test --locked "$@"
