#!/usr/bin/env bash
# The one command that runs every check on a fresh machine:
# installs what the tests need, then format, lint and test the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/reference-venv.sh   # reference tools (test oracle) + gnupg

# Debian packages the tests drive: curl (HTTP checks) and a headless
# Chromium (what an operator's browser shows of `sstream serve`).
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
