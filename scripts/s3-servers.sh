#!/usr/bin/env bash
# Installs the real S3 servers the bucket tests (crates/sstream/tests/s3.rs)
# start on 127.0.0.1: moto in server mode (in target/moto-venv) and s3s-fs,
# which checks request signatures (in target/s3s-fs). Idempotent; the tests
# start and stop the servers themselves, one per test, on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_PIN=5.2.5
S3S_FS_PIN=0.14.1   # 0.17 needs a newer rustc than this project's
VENV=target/moto-venv
S3S_ROOT=target/s3s-fs

python3 -c 'import ensurepip' 2>/dev/null || {
  if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv
}

# A venv copied from another checkout runs that checkout's pip: start afresh.
if [ -f "$VENV/bin/pip" ] && ! head -n 1 "$VENV/bin/pip" | grep -qF "#!$(pwd -P)/$VENV/bin/"; then
  rm -rf "$VENV"
fi
if ! "$VENV/bin/pip" show moto 2>/dev/null | grep -qx "Version: $MOTO_PIN"; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_PIN"
fi
"$VENV/bin/moto_server" --help >/dev/null

if ! grep -qF "\"s3s-fs $S3S_FS_PIN " "$S3S_ROOT/.crates.toml" 2>/dev/null || [ ! -x "$S3S_ROOT/bin/s3s-fs" ]; then
  cargo install --quiet --locked --root "$S3S_ROOT" "s3s-fs@$S3S_FS_PIN" --features binary
fi
"$S3S_ROOT/bin/s3s-fs" --help >/dev/null
echo "S3 servers: $VENV/bin/moto_server (moto $MOTO_PIN), $S3S_ROOT/bin/s3s-fs ($S3S_FS_PIN)"
