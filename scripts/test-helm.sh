#!/usr/bin/env bash
# Tests of the Helm chart in helm/codepipeline-gateway.
#
# Creates a virtualenv at .venv-helm (inside the repo), installs the pinned
# tests/helm/requirements.txt from PyPI, builds the gateway binary (the parity
# tests run its check-config) and runs pytest. Needs only python3
# (3.10+) with the venv module: helm-python-sdk's wheel carries Helm's Go
# library, so no helm binary, Go toolchain or cluster is involved.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv-helm"
requirements="$repo/tests/helm/requirements.txt"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "test-helm: $python is missing or older than 3.10" >&2
  exit 1
fi

# Debian splits ensurepip into python3-venv; install it when it is missing.
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    py_minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq "python${py_minor}-venv" </dev/null || apt-get install -y -qq python3-venv </dev/null
  else
    echo "test-helm: $python has no venv/ensurepip; install python3-venv" >&2
    exit 1
  fi
fi

# Reinstall only when requirements.txt changed since the venv was made.
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --requirement "$requirements" </dev/null
  echo "$want" >"$stamp"
fi

cd "$repo"
# The parity tests ask the gateway binary itself what it accepts.
echo "test-helm: cargo build --locked"
cargo build --locked --quiet </dev/null
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/helm "$@" </dev/null
