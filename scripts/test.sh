#!/usr/bin/env bash
# Runs every test of the project: the README's test command.
#
#   1. Rust: unit tests beside the code and end-to-end tests in tests/ and
#      emulator/tests/ (real gRPC client -> gateway -> aws-sdk-codepipeline ->
#      HTTP -> emulator), all on loopback.
#   2. The Helm chart, rendered by Helm's own engine and checked against the
#      Kubernetes schemas (scripts/test-helm.sh; makes its own virtualenv).
#   3. cargo deny against deny.toml and the advisory snapshot in supply-chain/
#      (scripts/supply-chain.sh; installs a pinned cargo-deny when missing).
#   4. The example workers (Python, Node, Go) and grpcurl recipes, if present
#      (scripts/test-examples.sh; makes its own virtualenv, runs npm ci, and
#      installs Debian's Go packages when missing).
#
# Needs: a Rust toolchain, python3 and Node.js with npm. Nothing else is
# assumed: the Python and npm dependencies are pinned and installed locally,
# the Go ones come from Debian (apt-get, as root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> cargo test (workspace)"
cargo test --workspace --locked

echo "==> Helm chart tests"
bash scripts/test-helm.sh

echo "==> supply chain: cargo deny (licences, bans, sources, advisories)"
bash scripts/supply-chain.sh

if [ -f scripts/test-examples.sh ]; then
  echo "==> example workers and grpcurl recipes"
  bash scripts/test-examples.sh
fi
