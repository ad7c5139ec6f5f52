#!/usr/bin/env bash
# The one command that runs every check on a fresh machine:
# installs what the tests need, then format, lint, check the docs and test
# the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/reference-venv.sh   # reference tools (test oracle) + gnupg
bash scripts/s3-servers.sh       # moto and s3s-fs, the S3 servers of tests/s3.rs

# Debian packages the tests drive: curl (HTTP checks), openssl (a test CA
# for HTTPS sources), a headless
# Chromium (what an operator's browser shows of `sstream serve`),
# systemd (`systemd-analyze verify` on the shipped units) and LXD's
# client `lxc` (tests/lxd.rs: a mirror LXD can use, without a daemon).
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v chromium >/dev/null || missing+=(chromium)
command -v openssl >/dev/null || missing+=(openssl)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v lxc >/dev/null || missing+=(lxd-client)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The disk the build and the tests use (a full disk is the first thing to
# rule out when a build fails to link).
df -h . "${TMPDIR:-/tmp}" | sed 's/^/test.sh: /'

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The docs: relative links (files and anchors) in README.md, CONTRIBUTING.md
# and docs/, and docs/reference.md against the commands' --help and
# dist/sstream.toml. A failure is reported here and fails the script after
# the tests have run.
cargo build -p sstream
docs_status=0
python3 scripts/docs-check.py --sstream target/debug/sstream || docs_status=$?
# Every test binary prints its own "test result:" line; the last line of
# this script sums them up.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
if [ "$status" -eq 0 ]; then status=$docs_status; fi
exit "$status"
