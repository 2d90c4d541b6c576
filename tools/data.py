"""Data construction: extract → clean → deduplicate → rewrite to the benchmark's format → render → write.

Every operation records how many rows survive it, so the manifest explains the dataset's size.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import sources
from core.errors import InputError, SourceError
from core.handoffs import DataKnobs, DatasetManifest, OpCount, SourceChoice
from tasks.base import BenchmarkTask, read_jsonl

DATASET_NAME = "train"
META_FILE = "records_meta.jsonl"


def load_source(task: BenchmarkTask, name: str) -> list[dict[str, Any]]:
    """Rows of one source, in the benchmark's raw schema.

    `benchmark_train` is the benchmark's own training source (never its test set); `local:<path>` a JSONL file
    with the same fields; `hub:<dataset>` a hub dataset's train split (needs the hub). Remote model APIs are refused.
    """
    source = sources.parse(name)
    if source.kind == "benchmark_train":
        return task.training_rows()
    if source.kind == "local":
        try:
            return read_jsonl(source.path)
        except InputError as e:
            raise SourceError(e.message) from None
    from datasets import load_dataset

    try:
        return list(load_dataset(source.arg, split="train"))
    except Exception as e:  # noqa: BLE001  any hub failure is a source the agent must replace
        raise SourceError(f"hub dataset {source.arg!r} could not be loaded: {type(e).__name__}: {e}") from None


def construct(task: BenchmarkTask, model_dir: str, sources: list[SourceChoice], knobs: DataKnobs, out_dir: Path, *,
              cutoff_len: int, exclude_ids: set[str], attempt: int,
              on_progress: Callable[[str], None] | None = None) -> DatasetManifest:
    """Build the LlamaFactory dataset for one iteration and its manifest."""
    from transformers import AutoTokenizer

    from tools.dedup import exact_duplicates, near_duplicates
    from tools.sft_data import end_of_turn, record_tokens, sft_record, write_llamafactory_dataset

    ops: list[OpCount] = []
    rows: list[dict[str, Any]] = []
    for src in sources:
        got = load_source(task, src.name)
        rows += [dict(r, _source=src.name) for r in got[: max(src.max_rows * 4, src.max_rows)]]
    ops.append(OpCount(op="extract", rows_after=len(rows)))

    rows = [r for r in rows if task.row_ok(r)]
    ops.append(OpCount(op="clean (empty or unanswered rows dropped)", rows_after=len(rows)))

    texts = [task.dedup_text(r) for r in rows]
    drop = set(exact_duplicates(texts))
    rows = [r for i, r in enumerate(rows) if i not in drop]
    ops.append(OpCount(op="exact dedup", rows_after=len(rows)))
    drop = set(near_duplicates([task.dedup_text(r) for r in rows]))
    rows = [r for i, r in enumerate(rows) if i not in drop]
    ops.append(OpCount(op="near-duplicate removal (MinHash LSH)", rows_after=len(rows)))

    examples = [task.training_example(r, knobs) for r in rows]
    examples = [e for e in examples if e.source_id not in exclude_ids]
    ops.append(OpCount(op=f"decontamination exclusions ({len(exclude_ids)} ids)", rows_after=len(examples)))

    random.Random(knobs.seed + attempt).shuffle(examples)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = task.chat_template(model_dir) or tokenizer.chat_template  # the evaluation's
    eot = end_of_turn(tokenizer)
    records, meta = [], []
    for ex in examples:
        if len(records) >= knobs.max_rows:
            break
        prompt = tokenizer.apply_chat_template(ex.messages, tools=ex.tools, tokenize=False, add_generation_prompt=True)
        record = sft_record(prompt, ex.response, eot)
        n_tokens = record_tokens(tokenizer, record)  # the count LlamaFactory itself truncates by
        if n_tokens > cutoff_len:
            continue  # truncation would cut off the answer line the scorer reads
        records.append(record)
        meta.append({"source_id": ex.source_id, "input": ex.input_text, "decontam": ex.decontam_text,
                     "tokens": n_tokens, **({"tools": ex.tools} if ex.tools else {})})
    ops.append(OpCount(op=f"rewrite to answer format, render with chat template, keep ≤{cutoff_len} tokens, "
                          f"cap {knobs.max_rows}", rows_after=len(records)))

    out_dir.mkdir(parents=True, exist_ok=True)
    if not records:  # nothing to train on: validation sends this back to selection
        manifest = DatasetManifest(dataset_dir=str(out_dir), dataset_name="", rows=0, sources=[s.name for s in sources],
                                   operations=ops, content_sha256="", with_system=knobs.with_system, attempt=attempt)
        (out_dir / "manifest.json").write_text(manifest.model_dump_json(indent=2))
        return manifest
    data_file = write_llamafactory_dataset(records, out_dir, DATASET_NAME)
    with (out_dir / META_FILE).open("w") as f:
        for m in meta:
            f.write(json.dumps(m) + "\n")
    manifest = DatasetManifest(
        dataset_dir=str(out_dir), dataset_name=DATASET_NAME, rows=len(records), sources=[s.name for s in sources],
        operations=ops, content_sha256=hashlib.sha256(data_file.read_bytes()).hexdigest(),
        with_system=knobs.with_system, attempt=attempt)
    (out_dir / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    if on_progress:
        on_progress(f"dataset: {len(records)} rows ({' → '.join(str(o.rows_after) for o in ops)})")
    return manifest


def load_records(dataset_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The dataset's records and their per-row metadata, as construction wrote them."""
    info = json.loads((dataset_dir / "dataset_info.json").read_text())[DATASET_NAME]
    text = (dataset_dir / info["file_name"]).read_text()
    records = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x]
    meta = [json.loads(line) for line in (dataset_dir / META_FILE).read_text().splitlines() if line.strip()]
    return records, meta


def shared_items(task: BenchmarkTask) -> list[str]:
    """Test items the training source or the evaluation's own prompt already holds, as findings (empty: none).

    Item identity is the normalised input text (the text dedup compares). Construction's n-gram decontamination
    still removes what shares less than a whole item; this catches the gross cases at start, such as a train
    split that is the test split, or a few-shot block drawn from the test set.
    """
    from tools.decontam import normalize

    test = {normalize(task.dedup_text(r)) for r in task.load_test()} - {""}
    found = []
    train = {normalize(task.dedup_text(r)) for r in task.training_rows()}
    if shared := len(test & train):
        found.append(f"{shared} of the {len(test)} test items are also in the training source ({task.train_source})")
    inputs = task.eval_inputs(1)
    system = " ".join(m["content"] for m in task.prompt_messages(inputs[0]) if m["role"] == "system") if inputs else ""
    if system:
        text = f" {normalize(system)} "
        in_prompt = sum(f" {t} " in text for t in test if len(t.split()) >= 8)
        if in_prompt:
            found.append(f"the evaluation's system message holds {in_prompt} test items")
    return found
