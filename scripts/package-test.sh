#!/usr/bin/env bash
# The Debian package, end to end (a CI step of its own: it builds the release
# binaries). Run as root on a throwaway machine: it installs and removes
# packages with dpkg.
#
# Builds target/debian/sstream_<version>_<arch>.deb (scripts/package.sh),
# checks its contents and lintian, builds a stand-in for Ubuntu's
# `simplestreams` package (owning /usr/bin/sstream-mirror and
# /usr/bin/sstream-query) and installs both in both orders, showing the
# diversion policy at work; runs the installed tools, a man page, the bash
# completion and `systemd-analyze verify`; removes (config left) and purges.
# Whatever it installed is removed again at the end (Debian packages too;
# SSTREAM_PACKAGE_TEST_KEEP_TOOLS=1 keeps lintian and the like). The last line
# is `package: N passed, N failed`.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
repo=$PWD

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1"; }
# check NAME COMMAND...: COMMAND must succeed; its output is shown on failure.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name"; printf '%s\n' "$out" | sed 's/^/       /' | head -n 40; fi
}
# check_output NAME PATTERN COMMAND...: COMMAND must succeed and print a
# line matching the extended regex PATTERN.
check_output() {
  local name=$1 pattern=$2 out
  shift 2
  if out=$("$@" 2>&1) && grep -Eq -- "$pattern" <<<"$out"; then pass "$name"; else
    fail "$name (wanted /$pattern/)"; printf '%s\n' "$out" | sed 's/^/       /' | head -n 40
  fi
}
die() { echo "package-test: error: $*" >&2; echo "package: $passed passed, $((failed + 1)) failed"; exit 1; }
installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }
known() { dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -Eqv '^(not-installed)?$'; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages with dpkg -i; CI runs it on a throwaway machine)"
command -v dpkg >/dev/null || die "dpkg not found: the package test needs a Debian-based machine"
for p in sstream simplestreams; do
  ! known "$p" || die "package $p is already on this machine; this test installs and purges it, remove it first"
done
dpkg-divert --list 2>/dev/null | grep -q ' by sstream$' && die "diversions by sstream exist already (dpkg-divert --list)"

work=$(mktemp -d)
new_tools=()
restore() {
  for p in sstream simplestreams; do known "$p" && dpkg --purge "$p" >/dev/null 2>&1; done
  # Diversions left by a failed maintainer script, if any.
  for name in sstream-mirror sstream-query; do
    dpkg-divert --list "/usr/bin/$name" 2>/dev/null | grep -q ' by sstream$' &&
      dpkg-divert --package sstream --remove --rename --divert "/usr/bin/$name.simplestreams" "/usr/bin/$name" >/dev/null
  done
  if [ ${#new_tools[@]} -gt 0 ] && [ "${SSTREAM_PACKAGE_TEST_KEEP_TOOLS:-}" != 1 ]; then
    echo "package-test: removing what it installed: ${new_tools[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${new_tools[@]}" >/dev/null 2>&1 ||
      echo "package-test: warning: could not purge ${new_tools[*]}" >&2
  fi
  rm -rf "$work"
}
trap restore EXIT

# --- Tools: lintian, man, systemd-analyze, bash-completion, dpkg-dev -------
tools=()
command -v lintian >/dev/null || tools+=(lintian)
command -v man >/dev/null || tools+=(man-db)
command -v systemd-analyze >/dev/null || tools+=(systemd)
[ -f /usr/share/bash-completion/bash_completion ] || tools+=(bash-completion)
command -v gzip >/dev/null || tools+=(gzip)
command -v dpkg-shlibdeps >/dev/null || tools+=(dpkg-dev)
if [ ${#tools[@]} -gt 0 ]; then
  echo "package-test: installing ${tools[*]}"
  dpkg-query -W -f='${db:Status-Status} ${Package}\n' | awk '$1 == "installed" { print $2 }' | sort >"$work/before"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null; }; then
    die "apt-get install ${tools[*]} failed"
  fi
  dpkg-query -W -f='${db:Status-Status} ${Package}\n' | awk '$1 == "installed" { print $2 }' | sort >"$work/after"
  mapfile -t new_tools < <(comm -13 "$work/before" "$work/after")
fi

# --- Build ----------------------------------------------------------------
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
if [ -n "${SSTREAM_PACKAGE_TEST_DEB:-}" ]; then
  # A package built before (e.g. by an earlier CI step): test it as it is.
  deb=$(realpath "$SSTREAM_PACKAGE_TEST_DEB")
  echo "package-test: testing $deb (SSTREAM_PACKAGE_TEST_DEB; not building)"
  check "the package to test exists" test -s "$deb"
else
  deb=target/debian/sstream_${version}_${arch}.deb
  rm -f "$deb"
  echo "package-test: building $deb (release build, may take minutes)"
  if ! bash scripts/package.sh >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log"
    die "scripts/package.sh failed"
  fi
  check "scripts/package.sh builds $deb" test -s "$deb"
  deb=$repo/$deb
fi
[ -s "$deb" ] || die "no package to test"

# --- Contents ---------------------------------------------------------------
dpkg-deb -c "$deb" | awk '{ mode = $1; path = $6; sub(/^\./, "", path); print mode, path }' >"$work/contents"
has() { # has MODE PATH: the package holds PATH with that ls-style mode
  grep -qxF -- "$1 $2" "$work/contents"
}
check "contents: /usr/bin/sstream (-rwxr-xr-x)" has -rwxr-xr-x /usr/bin/sstream
for bin in sstream-mirror sstream-query; do
  check "contents: /usr/bin/$bin, a link to sstream" \
    bash -c "dpkg-deb -c '$deb' | grep -qE '^l[^ ]+ .* \./usr/bin/$bin -> sstream\$'"
done
# The pages of the three binaries and of the subcommands without a drop-in
# (every subcommand `sstream --help` lists is checked once installed).
for page in sstream sstream-mirror sstream-query sstream-serve sstream-verify sstream-demo; do
  check "contents: man page /usr/share/man/man1/$page.1.gz" has -rw-r--r-- "/usr/share/man/man1/$page.1.gz"
done
for bin in sstream sstream-mirror sstream-query; do
  check "contents: bash completion of $bin" has -rw-r--r-- "/usr/share/bash-completion/completions/$bin"
  check "contents: zsh completion of $bin" has -rw-r--r-- "/usr/share/zsh/vendor-completions/_$bin"
  check "contents: fish completion of $bin" has -rw-r--r-- "/usr/share/fish/vendor_completions.d/$bin.fish"
done
units="sstream-sync.service sstream-sync.timer sstream-serve.service"
for unit in $units; do
  check "contents: unit /usr/lib/systemd/system/$unit" has -rw-r--r-- "/usr/lib/systemd/system/$unit"
done
check "contents: no unit enabled by a shipped .wants link" bash -c "! grep -q '\.wants/' '$work/contents'"
check "contents: /etc/sstream/sstream.toml" has -rw-r--r-- /etc/sstream/sstream.toml
check_output "control: /etc/sstream/sstream.toml is a conffile" '^/etc/sstream/sstream\.toml$' dpkg-deb -I "$deb" conffiles
check "contents: copyright" has -rw-r--r-- /usr/share/doc/sstream/copyright
check "contents: changelog" has -rw-r--r-- /usr/share/doc/sstream/changelog.gz
check_output "control: preinst diverts the simplestreams names" 'dpkg-divert --package sstream --add --rename' dpkg-deb -I "$deb" preinst
check_output "control: postrm gives them back" 'dpkg-divert --package sstream --remove --rename' dpkg-deb -I "$deb" postrm
check_output "control: Version $version" "^ Version: ${version//./\\.}$" dpkg-deb -I "$deb"
check_output "control: Depends on libc6 (dpkg-shlibdeps)" '^ Depends: .*libc6' dpkg-deb -I "$deb"

# --- lintian ----------------------------------------------------------------
lintian --fail-on error --display-info "$deb" >"$work/lintian" 2>&1
lintian_status=$?
sed 's/^/       lintian: /' "$work/lintian"
if [ $lintian_status -eq 0 ] && ! grep -q '^E: ' "$work/lintian"; then pass "lintian: no errors"; else fail "lintian: errors"; fi
# Every warning is fixed or overridden with its reason in
# dist/debian/lintian-overrides.
if grep -q '^W: ' "$work/lintian"; then fail "lintian: warnings"; else pass "lintian: no warnings"; fi

# --- The stand-in simplestreams package -----------------------------------
stand_in=$work/simplestreams
mkdir -p "$stand_in/DEBIAN" "$stand_in/usr/bin"
cat >"$stand_in/DEBIAN/control" <<EOF
Package: simplestreams
Version: 0.1.0-67-g8497b634-0ubuntu1
Architecture: all
Maintainer: sstream package test <root@localhost>
Description: stand-in for Ubuntu's simplestreams (package-test.sh)
 Owns /usr/bin/sstream-mirror and /usr/bin/sstream-query as Ubuntu's does.
EOF
for name in sstream-mirror sstream-query; do
  printf '#!/bin/sh\necho "python simplestreams %s $*"\n' "$name" >"$stand_in/usr/bin/$name"
  chmod 755 "$stand_in/usr/bin/$name"
done
dpkg-deb --root-owner-group --build "$stand_in" "$work/simplestreams.deb" >/dev/null || die "dpkg-deb --build of the stand-in failed"

# dpkg -i, with man pages and docs included even where dpkg.cfg.d excludes
# them (minimal images).
install_deb() {
  dpkg --path-include='/usr/share/man/man1/sstream*' --path-include='/usr/share/doc/sstream/*' -i "$1"
}
ours() { check_output "$1: /usr/bin/$2 is sstream's" "^$2 $version\$" "/usr/bin/$2" --version; }
theirs() { check_output "$1: $3 is the stand-in's" "^python simplestreams $2" "$3"; }
diverted() {
  check_output "$1: dpkg-divert --list shows /usr/bin/$2 diverted by sstream" \
    "diversion of /usr/bin/$2 to /usr/bin/$2.simplestreams by sstream" dpkg-divert --list "/usr/bin/$2"
}
not_diverted() { check "$1: no diversion of /usr/bin/$2 is left" bash -c "[ -z \"\$(dpkg-divert --list /usr/bin/$2)\" ]"; }

# --- The installed tools ------------------------------------------------------
installed_checks() {
  check_output "installed: sstream --version" "^sstream $version\$" sstream --version
  check_output "installed: sstream-mirror --help" '--max <MAX>' sstream-mirror --help
  check_output "installed: sstream-query --help" '--output-format' sstream-query --help
  check_output "installed: man -l sstream-mirror.1.gz" 'sstream mirror.* takes the same arguments' \
    env LC_ALL=C MANWIDTH=100 man -l /usr/share/man/man1/sstream-mirror.1.gz
  # A page for every subcommand (`sstream mirror` and `sstream query` share
  # the drop-ins' pages, which say so), and every long option of each
  # command's --help on its page: they cannot drift.
  local sub cmd page missing opt subs
  subs=$(sstream --help | sed -n '/^Commands:/,/^$/p' | awk 'NR > 1 && $1 != "help" { print $1 }')
  for sub in $subs; do
    check_output "installed: man -w sstream-$sub finds its page" "^/usr/share/man/man1/sstream-$sub\.1\.gz\$" man -w "sstream-$sub"
  done
  for cmd in sstream sstream-mirror sstream-query $(printf 'sstream:%s ' $subs); do
    cmd=${cmd/:/ } page=/usr/share/man/man1/${cmd/ /-}.1.gz missing=
    for opt in $($cmd --help | grep -Eo -- '--[a-z][a-z0-9-]+' | sort -u); do
      LC_ALL=C MANWIDTH=200 man -l "$page" 2>/dev/null | grep -qF -- "$opt" || missing="$missing $opt"
    done
    if [ -z "$missing" ]; then pass "installed: every option of '$cmd --help' is on ${page##*/}"; else fail "installed: ${page##*/} lacks$missing"; fi
  done
  # The bash completion, found by bash-completion's loader in the standard
  # directory, completes `sstream mi<TAB>` to `mirror`.
  check_output "installed: bash -i completes 'sstream mi<TAB>' to mirror" '^COMPREPLY=mirror$' \
    bash --norc -i -c '
      source /usr/share/bash-completion/bash_completion
      __load_completion sstream || exit 1
      complete -p sstream
      func=$(complete -p sstream | sed -n "s/.*-F \([^ ]*\).*/\1/p")
      COMP_WORDS=(sstream mi); COMP_CWORD=1; COMP_LINE="sstream mi"; COMP_POINT=${#COMP_LINE}
      "$func" sstream mi sstream
      echo "COMPREPLY=${COMPREPLY[*]}"' </dev/null
  check_output "installed: bash completion of sstream-mirror offers --max" '^COMPREPLY=.*--max' \
    bash --norc -i -c '
      source /usr/share/bash-completion/bash_completion
      __load_completion sstream-mirror || exit 1
      func=$(complete -p sstream-mirror | sed -n "s/.*-F \([^ ]*\).*/\1/p")
      COMP_WORDS=(sstream-mirror --ma); COMP_CWORD=1; COMP_LINE="sstream-mirror --ma"; COMP_POINT=${#COMP_LINE}
      "$func" sstream-mirror --ma sstream-mirror
      echo "COMPREPLY=${COMPREPLY[*]}"' </dev/null
  check_output "installed: zsh completion is a #compdef file" '^#compdef sstream$' head -n 1 /usr/share/zsh/vendor-completions/_sstream
  check_output "installed: fish completion completes sstream" '^complete -c sstream ' cat /usr/share/fish/vendor_completions.d/sstream.fish
  # The units: verified offline when systemd-analyze can run here (it needs
  # no running systemd, but some containers lack what it loads): a trivial
  # unit tells.
  mkdir -p "$work/units"
  printf '[Unit]\nDescription=probe\n[Service]\nType=oneshot\nExecStart=/bin/true\n' >"$work/units/sstream-probe.service"
  if (cd "$work/units" && systemd-analyze verify ./sstream-probe.service) >"$work/probe.log" 2>&1; then
    for unit in $units; do
      check "installed: systemd-analyze verify $unit" systemd-analyze verify "/usr/lib/systemd/system/$unit"
    done
  else
    echo "skip - systemd-analyze verify cannot run on this machine (even a trivial unit fails):"
    sed 's/^/       /' "$work/probe.log" | head -n 5
  fi
  check "installed: no unit enabled" bash -c "! find /etc/systemd/system -name 'sstream-*' | grep -q ."
  check_output "installed: /etc/sstream/sstream.toml is a conffile" '^ /etc/sstream/sstream\.toml ' \
    dpkg-query -W -f='${Conffiles}\n' sstream
}

removed_cleanly() { # removed_cleanly STEP [PATH...]: after dpkg -r sstream; PATHs belong to another package now
  local step=$1 left
  shift
  check_output "$step: dpkg -r leaves sstream in config-files" '^config-files$' dpkg-query -W -f='${db:Status-Status}' sstream
  left=$(awk '$1 !~ /^d/ && $2 !~ /^\/etc\// { print $2 }' "$work/contents" | grep -vxF -f <(printf '%s\n' "$@" /nothing) |
    while read -r p; do [ -e "$p" ] && echo "$p"; done)
  if [ -z "$left" ]; then pass "$step: dpkg -r removes every file but the config"; else fail "$step: dpkg -r left $left"; fi
  check "$step: dpkg -r keeps /etc/sstream/sstream.toml" test -f /etc/sstream/sstream.toml
}
purged() { # purged STEP: after dpkg --purge sstream
  check "$1: dpkg --purge removes /etc/sstream" test ! -e /etc/sstream
  check "$1: dpkg --purge forgets sstream" bash -c "! dpkg-query -W -f='\${db:Status-Status}' sstream 2>/dev/null | grep -q ."
}

# --- Order 1: simplestreams first, then sstream -------------------------------
echo "package-test: order 1: simplestreams (stand-in), then sstream"
check "order 1: dpkg -i simplestreams" dpkg -i "$work/simplestreams.deb"
theirs "order 1, before sstream" sstream-mirror /usr/bin/sstream-mirror
check "order 1: dpkg -i sstream" install_deb "$deb"
for name in sstream-mirror sstream-query; do
  ours "order 1" "$name"
  theirs "order 1" "$name" "/usr/bin/$name.simplestreams"
  diverted "order 1" "$name"
done
check_output "order 1: dpkg -S names the diversion" 'diversion by sstream from: /usr/bin/sstream-mirror' dpkg -S /usr/bin/sstream-mirror
installed_checks
check "order 1: dpkg -r sstream" dpkg -r sstream
removed_cleanly "order 1" /usr/bin/sstream-mirror /usr/bin/sstream-query
for name in sstream-mirror sstream-query; do
  theirs "order 1, after removing sstream" "$name" "/usr/bin/$name"
  not_diverted "order 1" "$name"
done
check "order 1: dpkg --purge sstream" dpkg --purge sstream
purged "order 1"
check "order 1: dpkg --purge simplestreams" dpkg --purge simplestreams

# --- Order 2: sstream first, then simplestreams -------------------------------
echo "package-test: order 2: sstream, then simplestreams (stand-in)"
check "order 2: dpkg -i sstream" install_deb "$deb"
ours "order 2, alone" sstream-mirror
check "order 2: dpkg -i simplestreams" dpkg -i "$work/simplestreams.deb"
for name in sstream-mirror sstream-query; do
  ours "order 2" "$name"
  theirs "order 2" "$name" "/usr/bin/$name.simplestreams"
  diverted "order 2" "$name"
done
check "order 2: dpkg -r simplestreams" dpkg -r simplestreams
ours "order 2, after removing simplestreams" sstream-mirror
check "order 2: no /usr/bin/sstream-mirror.simplestreams is left" test ! -e /usr/bin/sstream-mirror.simplestreams
check "order 2: dpkg -i sstream again (upgrade path, same version)" install_deb "$deb"
ours "order 2, reinstalled" sstream-query
check "order 2: dpkg -r sstream" dpkg -r sstream
removed_cleanly "order 2"
for name in sstream-mirror sstream-query; do not_diverted "order 2" "$name"; done
check "order 2: dpkg --purge sstream" dpkg --purge sstream
purged "order 2"
check "order 2: dpkg --purge simplestreams" dpkg --purge simplestreams

echo "package: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
