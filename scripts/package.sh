#!/usr/bin/env bash
# Builds the Debian package target/debian/sstream_<version>_<arch>.deb:
# release binaries, their man pages and shell completions generated from the
# clap definitions (examples/generate-assets.rs), then `cargo deb`.
# Installs cargo-deb first when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# The units and the default config come from dist/ (see the package
# metadata in crates/sstream/Cargo.toml).
for f in dist/sstream.toml dist/systemd/sstream-sync.service \
    dist/systemd/sstream-sync.timer dist/systemd/sstream-serve.service \
    dist/debian/changelog dist/debian/preinst dist/debian/postrm; do
  [ -f "$f" ] || { echo "package.sh: error: $f is missing" >&2; exit 1; }
done

# cargo-deb computes Depends (libc6) with dpkg-shlibdeps; without it the
# package would silently depend on nothing.
command -v dpkg-shlibdeps >/dev/null ||
  { echo "package.sh: error: dpkg-shlibdeps not found (apt-get install dpkg-dev)" >&2; exit 1; }

if ! cargo deb --version >/dev/null 2>&1; then
  echo "package.sh: installing cargo-deb" >&2
  cargo install --locked cargo-deb
fi

# One binary: the drop-ins are links to it (see the assets).
cargo build --release --locked -p sstream --bin sstream
assets=crates/sstream/target/assets
rm -rf "$assets"
cargo run --release --locked -q -p sstream --example generate-assets -- "$assets" >/dev/null
cargo deb --locked -p sstream --no-build --output target/debian/ | tail -n 1
