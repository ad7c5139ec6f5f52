#!/usr/bin/env bash
# The one command that runs every check on a fresh machine:
# installs what the tests need, then format, lint and test the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/reference-venv.sh   # reference tools (test oracle) + gnupg
if ! command -v curl >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq curl
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
