#!/usr/bin/env bash
# Builds the Go example worker (examples/go-worker) offline, into
# target/go-worker/go-worker, against Debian's packaged Go toolchain and
# gRPC/protobuf libraries: our machines reach no Go module proxy, so the
# build runs in GOPATH mode over /usr/share/gocode instead of fetching the
# modules that go.mod names (a user outside builds with those; see
# examples/go-worker/README.md).
#
# Installs the Debian packages when they are missing (as root, with apt-get;
# golang-github-golang-protobuf-1-5-dev explicitly, since grpc-dev is as
# happy with the 1.3 one, which predates the protobuf-go APIv2 stubs use),
# fails if gofmt or go vet has anything to say. (That the committed stubs in
# gen/go are what protoc makes of proto/ today is a test:
# tests/examples/test_proto.py.)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

packages=(golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev golang-google-genproto-dev
  protoc-gen-go protoc-gen-go-grpc protobuf-compiler)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "go-worker: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
  else
    echo "go-worker: missing Debian packages: ${missing[*]} (apt-get install them as root)" >&2
    exit 1
  fi
fi

module=github.com/codepipeline-gateway/codepipeline-gateway
work="$repo/target/go-worker"
mkdir -p "$work"

unformatted="$(gofmt -l examples/go-worker gen/go)"
if [ -n "$unformatted" ]; then
  echo "go-worker: not gofmt-clean (run gofmt -w): $unformatted" >&2
  exit 1
fi

# GOPATH mode: the repository's two packages under their import paths, and
# Debian's libraries (/usr/share/gocode) for the rest.
gopath="$work/gopath"
rm -rf "$gopath/src" && mkdir -p "$gopath/src/$module/gen" "$gopath/src/$module/examples"
cp -r gen/go "$gopath/src/$module/gen/go"
cp -r examples/go-worker "$gopath/src/$module/examples/go-worker"
export GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$work/cache" GOFLAGS= CGO_ENABLED=0
cd "$gopath/src/$module/examples/go-worker"
go vet .
go build -o "$work/go-worker" .
echo "go-worker: built $work/go-worker ($(go version | cut -d' ' -f3), grpc-go $(dpkg-query -W -f='${Version}' golang-google-grpc-dev))"
