"""Export: make a trained folder a clean, loadable HF model (merging a LoRA adapter with LlamaFactory's own
`export` command), atomically."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from core.errors import ExportError
from tools.llamafactory import _run_cli, check_config
from tools.sft_data import TEMPLATE, _write_json_atomic

# Files LlamaFactory/transformers leave next to the model that are training records, not part of the model.
_TRAINING_ARTEFACTS = {
    "training_args.bin", "trainer_state.json", "trainer_log.jsonl", "all_results.json", "train_results.json",
    "eval_results.json", "training_loss.png", "README.md",
}


def export_model(
    output_dir: Path,
    final_dir: Path,
    *,
    base_model: str | Path | None = None,
    on_progress: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
) -> Path:
    """Make the trained model in `output_dir` a clean, loadable HF model in `final_dir`, atomically.

    Guarantees: config.json with `architectures`, safetensors weights, the tokenizer (with `base_model`: exactly
    the base's) and a chat template, none of the trainer's records. A LoRA adapter is first merged into its base
    by LlamaFactory's own `export` command (log in `output_dir/merge/`). The model is built in a temporary sibling
    folder and renamed into place, so `final_dir` is either the old model or the complete new one.
    """
    output_dir, final_dir = Path(output_dir).resolve(), Path(final_dir).resolve()
    is_adapter = (output_dir / "adapter_config.json").is_file()
    if not is_adapter and not (output_dir / "config.json").is_file():
        raise ExportError(f"{output_dir} has neither config.json nor adapter_config.json: not a trained model")
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_dir.with_name(f".{final_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        if is_adapter:
            base_model = base_model or _adapter_base(output_dir)
            merge_lora(output_dir, base_model, tmp, workdir=output_dir / "merge", on_progress=on_progress,
                       timeout_s=timeout_s)
        else:
            tmp.mkdir()
            for item in output_dir.iterdir():
                # Files only: checkpoint-*/ and runs/ folders are training state, not the model.
                if item.is_file() and item.name not in _TRAINING_ARTEFACTS:
                    shutil.copy2(item, tmp / item.name)
        _ensure_architectures(tmp)
        _ensure_safetensors(tmp)
        _ensure_tokenizer(tmp, base_model)
        _swap_into_place(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-built copy behind; the error still propagates
        raise
    return final_dir


def merge_lora(
    adapter_dir: Path,
    base_model: str | Path,
    export_dir: Path,
    *,
    workdir: Path,
    template: str = TEMPLATE,
    on_progress: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
    python: str | None = None,
) -> Path:
    """Merge a LoRA adapter into its base with `llamafactory.cli export` (a subprocess, like training)."""
    args = {
        "model_name_or_path": str(base_model),
        "adapter_name_or_path": str(Path(adapter_dir).resolve()),
        "template": template,
        "finetuning_type": "lora",
        "export_dir": str(Path(export_dir).resolve()),
        "export_device": "cpu",
    }
    check_config(args, "export")
    _run_cli("export", yaml.safe_dump(args, sort_keys=False), Path(workdir), 1, on_progress, timeout_s, python)
    return Path(export_dir)


def _adapter_base(adapter_dir: Path) -> str:
    base = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ExportError(f"{adapter_dir}/adapter_config.json names no base model; pass base_model")
    return str(base)


def _ensure_architectures(model_dir: Path) -> None:
    """vLLM and inspect's providers need `architectures`; GGUF-converted configs leave it empty."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("architectures"):
        return
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.get("model_type", ""))
    if not arch:
        raise ExportError(f"config.json has no architectures and model_type {config.get('model_type')!r} is unknown")
    config["architectures"] = [arch]
    _write_json_atomic(path, config)


def _ensure_safetensors(model_dir: Path) -> None:
    if any(model_dir.glob("*.safetensors")):
        return
    if not any(model_dir.glob("*.bin")):
        raise ExportError(f"no weights in {model_dir}")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)  # old-style .bin: re-save as safetensors
    for f in model_dir.glob("pytorch_model*.bin*"):
        f.unlink()
    model.save_pretrained(model_dir)  # transformers 5 writes safetensors only (safe_serialization is gone)
    if not any(model_dir.glob("*.safetensors")):
        raise ExportError(f"re-saving {model_dir} produced no safetensors file")


_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json",
    "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
)


def _ensure_tokenizer(model_dir: Path, base_model: str | Path | None) -> None:
    """A loadable tokenizer with a chat template; with `base_model`, exactly the base model's tokenizer.

    LlamaFactory re-saves the tokenizer with its own tweaks (pad token, right padding); full SFT adds no tokens, so
    the base tokenizer is the one the evaluation must see. A vocabulary mismatch means training changed it: error.
    """
    from transformers import AutoTokenizer

    from tools.model import has_chat_template

    try:
        trained = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        if base_model is None:
            raise ExportError(f"no loadable tokenizer in {model_dir}: {e}") from e
        trained = None  # the base's tokenizer replaces it below
    if base_model is not None:
        base = AutoTokenizer.from_pretrained(base_model)
        if trained is not None and len(trained) != len(base):
            raise ExportError(f"tokenizer vocabulary changed in training ({len(base)} -> {len(trained)} tokens)")
        for name in _TOKENIZER_FILES:
            (model_dir / name).unlink(missing_ok=True)
        base.save_pretrained(model_dir)
    if not has_chat_template(model_dir):
        raise ExportError(f"the model in {model_dir} has no chat template (pass base_model to take the base's)")


def _swap_into_place(tmp: Path, final_dir: Path) -> None:
    """Rename `tmp` to `final_dir`; an existing final_dir is moved aside first and removed after."""
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        final_dir.rename(old)
    tmp.rename(final_dir)
    if old is not None:
        shutil.rmtree(old)
