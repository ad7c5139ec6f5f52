# Sourced by the bench scripts (after `cd` to the repository's root and
# `ROOT=$PWD`): installs what a bench needs and builds what it measures.
# `bench_tools [DEBIAN-PACKAGE:COMMAND]...` installs nginx, GNU time, curl
# and the extra packages whose command is missing (apt; sudo unless root),
# the reference (scripts/reference-venv.sh) and our release build with the
# stream generator (unless BENCH_NO_BUILD=1), then sets NGINX, REF, OURS and
# GEN.
bench_tools() {
  local need=() spec
  command -v nginx >/dev/null || need+=(nginx)
  [ -x /usr/bin/time ] || need+=(time)
  command -v curl >/dev/null || need+=(curl)
  for spec in "$@"; do
    command -v "${spec#*:}" >/dev/null || need+=("${spec%%:*}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    local sudo=sudo
    [ "$(id -u)" -eq 0 ] && sudo=
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${need[@]}"; } >&2
  fi
  NGINX=$(command -v nginx)
  bash scripts/reference-venv.sh >&2
  REF=$ROOT/target/reference-venv/bin/sstream-mirror
  [ "${BENCH_NO_BUILD:-0}" = 1 ] ||
    cargo build --release --bin sstream-mirror --example gen-stream -p sstream -p simplestreams >&2
  OURS=$ROOT/target/release/sstream-mirror
  GEN=$ROOT/target/release/examples/gen-stream
}
