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

cargo test --locked "$@"
