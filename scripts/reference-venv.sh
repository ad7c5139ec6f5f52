#!/usr/bin/env bash
# Installs the reference Python SimpleStreams tools (the tests' behavioural
# oracle, AGPL, never linked or copied) into target/reference-venv, and GnuPG,
# which the reference runs to verify signatures. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PIN=0.1.0.post59
VENV=target/reference-venv

apt_install() {
  if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "$@"
}

command -v gpg >/dev/null || apt_install gnupg
python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv

if ! "$VENV/bin/pip" show python-simplestreams 2>/dev/null | grep -qx "Version: $PIN"; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "python-simplestreams==$PIN"
fi
"$VENV/bin/sstream-mirror" --help >/dev/null
echo "reference tools: $VENV/bin (python-simplestreams $PIN)"
