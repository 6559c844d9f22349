#!/usr/bin/env bash
# cargo deny check (licences, bans, sources, advisories) from the committed
# deny.toml, offline: advisories come from the RustSec database snapshot in
# supply-chain/advisory-db.tar.gz, because our machines cannot reach GitHub.
# Installs cargo-deny (pinned) when it is missing. See supply-chain/README.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $version"; then
  echo "supply-chain: installing cargo-deny $version"
  cargo install --locked --quiet cargo-deny --version "$version" </dev/null
fi

# cargo-deny keeps each database in <db-path>/<last url segment>-<hash of the
# url>, as a git repository; unpack the snapshot there as one commit.
source_url="$(sed -n 's/^source = "\(.*\)"$/\1/p' supply-chain/advisory-db.toml)"
commit="$(sed -n 's/^commit = "\(.*\)"$/\1/p' supply-chain/advisory-db.toml)"
committed="$(sed -n 's/^committed = "\(.*\)"$/\1/p' supply-chain/advisory-db.toml)"
root=target/supply-chain/advisory-dbs
rm -rf "$root"
mkdir -p "$root"
db="$root/advisory-db-3157b0e258782691"
mkdir -p "$db"
tar -xzf supply-chain/advisory-db.tar.gz -C "$db"
(
  cd "$db"
  git init -q
  git add -A
  GIT_AUTHOR_DATE="$committed" GIT_COMMITTER_DATE="$committed" \
    git -c user.name=snapshot -c user.email=snapshot@localhost commit -q \
    -m "RustSec advisory-db $commit ($source_url), unpacked from supply-chain/advisory-db.tar.gz"
)
age_days=$(( ( $(date +%s) - $(date -d "$committed" +%s) ) / 86400 ))
echo "supply-chain: advisories from RustSec advisory-db ${commit:0:12} of $committed ($age_days days old)"
if [ "$age_days" -gt 90 ]; then
  echo "supply-chain: WARNING: the advisory snapshot is over 90 days old; refresh it (supply-chain/README.md)" >&2
fi

# deny checks every target deny.toml names, so it needs crates (Windows and
# wasm ones among them) that a Linux build never downloads: fetch them all
# from crates.io first, since --offline below also keeps cargo metadata off
# the network.
cargo fetch --locked --quiet </dev/null
exec cargo deny --offline --locked check "$@" </dev/null
