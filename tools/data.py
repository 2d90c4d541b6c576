"""Data construction: extract → clean → deduplicate → rewrite to the benchmark's format → render → write.

Every operation records how many rows survive it, so the manifest explains the dataset's size.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, Callable

from graph.state import DataKnobs, DatasetManifest, OpCount, SourceChoice
from tasks.base import BenchmarkTask, InputError, read_jsonl
from tools.guards import check_data_source

DATASET_NAME = "train"
META_FILE = "records_meta.jsonl"


class SourceError(ValueError):
    """A data source that cannot be read; the data engineer gets it back as a message and may pick another."""


def load_source(task: BenchmarkTask, name: str) -> list[dict[str, Any]]:
    """Rows of one source, in the benchmark's raw schema.

    `benchmark_train` is the benchmark's own train split; `local:<path>` a JSONL file with the same fields;
    `hub:<dataset>` a hub dataset (needs the hub). Remote model APIs are refused.
    """
    check_data_source(name)
    if name == "benchmark_train":
        return task.load_rows("train")
    if name.startswith("local:"):
        try:
            return read_jsonl(Path(name[6:]), required=())
        except InputError as e:
            raise SourceError(str(e)) from None
    if name.startswith("hub:"):
        from datasets import load_dataset

        try:
            return list(load_dataset(name[4:], split="train"))
        except Exception as e:  # noqa: BLE001  any hub failure is a source the agent must replace
            raise SourceError(f"hub dataset {name[4:]!r} could not be loaded: {type(e).__name__}: {e}") from e
    raise SourceError(f"unknown source {name!r}: use benchmark_train, local:<path.jsonl> or hub:<dataset>")


def construct(task: BenchmarkTask, model_dir: str, sources: list[SourceChoice], knobs: DataKnobs, out_dir: Path, *,
              cutoff_len: int, exclude_ids: set[str], attempt: int,
              on_progress: Callable[[str], None] | None = None) -> DatasetManifest:
    """Build the LlamaFactory dataset for one iteration and its manifest."""
    from transformers import AutoTokenizer

    from tools.dedup import exact_duplicates, near_duplicates
    from tools.train import end_of_turn, sft_record, write_llamafactory_dataset

    ops: list[OpCount] = []
    rows: list[dict[str, Any]] = []
    for src in sources:
        got = load_source(task, src.name)
        rows += [dict(r, _source=src.name) for r in got[: max(src.max_rows * 4, src.max_rows)]]
    ops.append(OpCount(op="extract", rows_after=len(rows)))

    rows = [r for r in rows if _usable(r)]
    ops.append(OpCount(op="clean (empty or unanswered rows dropped)", rows_after=len(rows)))

    texts = [str(r.get("question", "")) for r in rows]
    drop = set(exact_duplicates(texts))
    rows = [r for i, r in enumerate(rows) if i not in drop]
    ops.append(OpCount(op="exact dedup", rows_after=len(rows)))
    drop = set(near_duplicates([str(r.get("question", "")) for r in rows]))
    rows = [r for i, r in enumerate(rows) if i not in drop]
    ops.append(OpCount(op="near-duplicate removal (MinHash LSH)", rows_after=len(rows)))

    examples = [task.training_example(r, with_system=knobs.with_system, strip_annotations=knobs.strip_annotations,
                                      rewrite=knobs.rewrite_answers) for r in rows]
    examples = [e for e in examples if e.source_id not in exclude_ids]
    ops.append(OpCount(op=f"decontamination exclusions ({len(exclude_ids)} ids)", rows_after=len(examples)))

    random.Random(knobs.seed + attempt).shuffle(examples)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    eot = end_of_turn(tokenizer)
    records, meta = [], []
    for ex in examples:
        if len(records) >= knobs.max_rows:
            break
        prompt = tokenizer.apply_chat_template(ex.messages, tokenize=False, add_generation_prompt=True)
        n_tokens = len(tokenizer(prompt + ex.response + eot, add_special_tokens=False)["input_ids"])
        if n_tokens > cutoff_len:
            continue  # truncation would cut off the answer line the scorer reads
        records.append(sft_record(prompt, ex.response, eot))
        meta.append({"source_id": ex.source_id, "input": ex.input_text, "tokens": n_tokens})
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


def _usable(row: dict[str, Any]) -> bool:
    q, a = row.get("question"), row.get("answer")
    return isinstance(q, str) and isinstance(a, str) and bool(q.strip()) and "####" in a and bool(
        a.split("####")[-1].strip())


def load_records(dataset_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The dataset's records and their per-row metadata, as construction wrote them."""
    info = json.loads((dataset_dir / "dataset_info.json").read_text())[DATASET_NAME]
    text = (dataset_dir / info["file_name"]).read_text()
    records = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x]
    meta = [json.loads(line) for line in (dataset_dir / META_FILE).read_text().splitlines() if line.strip()]
    return records, meta
