"""The SFT dataset contract: every prompt pre-rendered exactly as the evaluation shows it, every response ending
with the model's end-of-turn marker, written as a LlamaFactory (alpaca-format) dataset.

LlamaFactory's `empty` template then adds nothing around that text: its user and assistant slots are the bare
content, it has no prefix (no bos), no default system and no eos slot. `tests/test_train.py` proves it through
LlamaFactory's own `get_dataset`. `record_tokens` counts a row the way LlamaFactory encodes it (prompt and response
apart); construction, validation and training all use that one count.

Preference (DPO) data is the pairwise form of the same contract: one pre-rendered prompt with a chosen and a
rejected response, each ending with the end-of-turn marker, registered with `"ranking": true` so LlamaFactory's
pairwise processor encodes prompt+chosen and prompt+rejected (`stage: dpo`); its length is the prompt plus the
longer response, the part the processor keeps within cutoff_len.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core.errors import DatasetFormatError

TEMPLATE = "empty"
"""LlamaFactory 0.9.5's `empty` template: format_user/format_assistant are `{{content}}`, no prefix, no default system,
no eos slot, replace_jinja_template=False (the model's own chat template is kept)."""

DATA_FORMAT_COLUMNS = {"prompt": "instruction", "response": "output"}
RANKING_COLUMNS = {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}
"""The dataset_info.json `columns` of a pairwise (ranking) dataset: LlamaFactory's DatasetAttr reads `prompt`,
`chosen` and `rejected` from it; every other column (query, response, system, ...) is then unset."""


def end_of_turn(tokenizer: Any) -> str:
    """The marker the chat template puts after an assistant message (ChatML: `<|im_end|>`), found by rendering one.

    Trailing whitespace is dropped: generation stops at the marker token, so the newline after it is never produced.
    """
    sentinel = "\u2063RESPONSE\u2063"
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": sentinel}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    if not isinstance(rendered, str) or sentinel not in rendered:
        raise DatasetFormatError("the tokenizer's chat template did not render an assistant message")
    marker = rendered.split(sentinel, 1)[1].strip()
    if not marker:  # a template with no explicit end-of-turn: the model stops at eos
        marker = tokenizer.eos_token or ""
    if not marker:
        raise DatasetFormatError("cannot find an end-of-turn marker: the chat template adds none and there is no eos")
    return marker


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt exactly as the evaluation shows it: the tokenizer's own chat template, generation prompt added."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise DatasetFormatError("apply_chat_template did not return a string")
    return text


def sft_record(prompt_text: str, response_text: str, eos: str) -> dict[str, str]:
    """One LlamaFactory (alpaca-format) record: the pre-rendered prompt and the response ending with `eos`.

    `eos` is the model's end-of-turn marker (see `end_of_turn`); it is appended unless the response already ends
    with it, so the model learns to stop where the evaluation's generation stops.
    """
    if not prompt_text:
        raise DatasetFormatError("empty prompt")
    if not response_text.strip():
        raise DatasetFormatError("empty response")
    if not eos:
        raise DatasetFormatError("empty end-of-turn marker")
    return {DATA_FORMAT_COLUMNS["prompt"]: prompt_text, DATA_FORMAT_COLUMNS["response"]: _ended(response_text, eos)}


def preference_record(prompt_text: str, chosen: str, rejected: str, eos: str) -> dict[str, str]:
    """One pairwise (DPO) record: the pre-rendered prompt, the chosen and the rejected response, each ending with
    `eos` exactly once (as in `sft_record`)."""
    if not prompt_text:
        raise DatasetFormatError("empty prompt")
    if not chosen.strip():
        raise DatasetFormatError("empty chosen response")
    if not rejected.strip():
        raise DatasetFormatError("empty rejected response")
    if not eos:
        raise DatasetFormatError("empty end-of-turn marker")
    chosen, rejected = _ended(chosen, eos), _ended(rejected, eos)
    if chosen == rejected:
        raise DatasetFormatError("chosen and rejected responses are identical")
    return {RANKING_COLUMNS["prompt"]: prompt_text, RANKING_COLUMNS["chosen"]: chosen,
            RANKING_COLUMNS["rejected"]: rejected}


def _ended(response: str, eos: str) -> str:
    return response if response.endswith(eos) else response + eos


def write_llamafactory_dataset(
    records: Iterable[Mapping[str, str]],
    dataset_dir: Path,
    name: str,
    *,
    ranking: bool = False,
    tokenizer: Any | None = None,
    cutoff_len: int | None = None,
) -> Path:
    """Write `records` as `<dataset_dir>/<name>.json` and register it in `<dataset_dir>/dataset_info.json`.

    `ranking=True` writes a pairwise (DPO) dataset of `preference_record`s (instruction/chosen/rejected), registered
    with `"ranking": true`; otherwise the records are `sft_record`s (instruction/output).

    With `tokenizer` and `cutoff_len`, a record longer than cutoff_len is an error: LlamaFactory would cut the
    prompt's *end* (the question) to fit, silently training on a prompt the evaluation never shows.
    Returns the data file's path.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise DatasetFormatError(f"dataset name {name!r}: use letters, digits, '_', '-', '.'")
    rows = [dict(r) for r in records]
    if not rows:
        raise DatasetFormatError("no records")
    columns = RANKING_COLUMNS if ranking else DATA_FORMAT_COLUMNS
    wanted = set(columns.values())
    for i, row in enumerate(rows):
        if set(row) != wanted or not all(isinstance(v, str) for v in row.values()):
            raise DatasetFormatError(f"record {i}: expected exactly string fields {sorted(wanted)}, got {sorted(row)}")
    if tokenizer is not None and cutoff_len is not None:
        too_long = [i for i, row in enumerate(rows) if record_tokens(tokenizer, row) > cutoff_len]
        if too_long:
            raise DatasetFormatError(
                f"{len(too_long)} of {len(rows)} records exceed cutoff_len={cutoff_len} tokens "
                f"(first: record {too_long[0]}); raise cutoff_len or shorten the prompts"
            )
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    data_file = dataset_dir / f"{name}.json"
    _write_json_atomic(data_file, rows)
    info_path = dataset_dir / "dataset_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    entry: dict[str, Any] = {"file_name": data_file.name, "formatting": "alpaca"}
    if ranking:
        entry["ranking"] = True
    info[name] = {**entry, "columns": dict(columns)}
    _write_json_atomic(info_path, info)
    return data_file


def record_tokens(tokenizer: Any, record: Mapping[str, str]) -> int:
    """Token count of a record as LlamaFactory's `empty` template encodes it (prompt and response separately).

    A pairwise record counts the prompt plus the longer of chosen and rejected: the pairwise processor fits
    exactly that within cutoff_len (both responses share the prompt and are cut to the same length).
    """

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    prompt = count(record[DATA_FORMAT_COLUMNS["prompt"]])
    if RANKING_COLUMNS["chosen"] in record:
        return prompt + max(count(record[RANKING_COLUMNS["chosen"]]), count(record[RANKING_COLUMNS["rejected"]]))
    return prompt + count(record[DATA_FORMAT_COLUMNS["response"]])


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)
