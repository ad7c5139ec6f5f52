#!/usr/bin/env bash
# Installs the reference Python SimpleStreams tools (the tests' behavioural
# oracle, AGPL, never linked or copied) into target/reference-venv, and GnuPG,
# which the reference runs to verify signatures. Also the official Prometheus
# Python client, whose parsers check our metrics. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PIN=0.1.0.post59
PROMETHEUS_PIN=0.26.0
VENV=target/reference-venv

apt_install() {
  if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "$@"
}

command -v gpg >/dev/null || apt_install gnupg
python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv

# A venv copied from another checkout (cp -a of target/) runs that
# checkout's pip, which would install there: start afresh.
if [ -f "$VENV/bin/pip" ] && ! head -n 1 "$VENV/bin/pip" | grep -qF "#!$(pwd -P)/$VENV/bin/"; then
  rm -rf "$VENV"
fi
if ! "$VENV/bin/pip" show python-simplestreams 2>/dev/null | grep -qx "Version: $PIN"; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "python-simplestreams==$PIN"
fi
if ! "$VENV/bin/pip" show prometheus-client 2>/dev/null | grep -qx "Version: $PROMETHEUS_PIN"; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "prometheus-client==$PROMETHEUS_PIN"
fi
"$VENV/bin/sstream-mirror" --help >/dev/null
"$VENV/bin/python" -c 'import prometheus_client.parser, prometheus_client.openmetrics.parser'
echo "reference tools: $VENV/bin (python-simplestreams $PIN, prometheus-client $PROMETHEUS_PIN)"
