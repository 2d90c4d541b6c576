"""Data construction: extract → clean → deduplicate → rewrite to the benchmark's format → mix → (sample the
model's own answers | pick by difficulty) → generate → render → write.

Every operation records how many rows survive it, so the manifest explains the dataset's size.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import sources
from core.errors import InputError, SourceError
from core.handoffs import DataKnobs, DatasetManifest, OpCount, SourceChoice
from tasks.base import BenchmarkTask, TrainingExample, read_jsonl

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


@dataclass(frozen=True)
class Models:
    """The models construction may run: the one this iteration starts from (self-distillation and DPO sample its
    answers; the `student` generator is it) through the evaluation's provider, and the generator (None: none)."""

    start: str
    provider: str
    on_gpu: bool
    generator: str | None = None
    batch_size: int | None = None


Pair = tuple[dict[str, Any], TrainingExample]


def construct(task: BenchmarkTask, model_dir: str, sources: list[SourceChoice], knobs: DataKnobs, out_dir: Path, *,
              cutoff_len: int, exclude_ids: set[str], attempt: int, method: str = "sft", models: Models | None = None,
              index: Any = None, on_progress: Callable[[str], None] | None = None) -> DatasetManifest:
    """Build the LlamaFactory dataset for one iteration and its manifest.

    `method` sft trains on the rows (and any generated ones); self_distill on the model's own answers the scorer
    marks correct; dpo on (correct, incorrect) pairs of its answers. `index` is the test set's n-gram index:
    generated rows that share a gram with it are dropped here (validation checks every row again)."""
    from transformers import AutoTokenizer

    from tools.sft_data import end_of_turn

    say = on_progress or (lambda _: None)
    ops: list[OpCount] = []
    pairs = _gather(task, sources, knobs, exclude_ids, ops)
    random.Random(knobs.seed + attempt).shuffle(pairs)
    pairs = _mix(pairs, knobs, ops)
    extra: dict[str, Any] = {"method": method}
    generating = bool(models and models.generator and (knobs.augment != "none" or knobs.synthesize) and method != "dpo")
    if method in ("self_distill", "dpo"):
        if models is None:
            raise InputError(f"{method} needs the model to sample from")
        chosen, sampling = _sampled(task, pairs, knobs, out_dir, models, method, ops, say)
        extra["sampling"] = sampling
    else:
        pairs = _by_difficulty(pairs, knobs, ops, rates=None)
        # Without generated rows every candidate goes on to rendering, whose cap counts only rows that fit cutoff_len.
        keep = _source_rows(knobs, len(pairs)) if generating else len(pairs)
        chosen = [(ex, None, r["_source"], "source") for r, ex in pairs[:keep]]
    if generating:
        made, extra["generation"] = _generated(task, pairs[: len(chosen)], knobs, out_dir, models, index, say)
        chosen += [(g.example, None, "generated", g.provenance["template"]) for g in made]
        extra["generated_rows"] = [{"id": g.example.source_id, **g.provenance} for g in made]
        ops.append(OpCount(op="generated rows added", rows_after=len(chosen)))
    chosen = [c for c in chosen if c[0].source_id not in exclude_ids]

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = task.chat_template(model_dir) or tokenizer.chat_template  # the evaluation's
    records, meta = _render(tokenizer, end_of_turn(tokenizer), chosen, knobs.max_rows, cutoff_len)
    ops.append(OpCount(op=f"render with the evaluation's chat template, keep ≤{cutoff_len} tokens, cap "
                          f"{knobs.max_rows}", rows_after=len(records)))
    extra["mixture"] = dict(Counter(m["from"] for m in meta))
    extra["pairwise"] = method == "dpo"

    out_dir.mkdir(parents=True, exist_ok=True)
    name, sha = "", ""
    if records:  # none: validation sends this back to selection
        from tools.sft_data import write_llamafactory_dataset

        data_file = write_llamafactory_dataset(records, out_dir, DATASET_NAME, ranking=method == "dpo")
        with (out_dir / META_FILE).open("w") as f:
            for m in meta:
                f.write(json.dumps(m) + "\n")
        name, sha = DATASET_NAME, hashlib.sha256(data_file.read_bytes()).hexdigest()
    manifest = DatasetManifest(dataset_dir=str(out_dir), dataset_name=name, rows=len(records),
                               sources=[s.name for s in sources], operations=ops, content_sha256=sha,
                               with_system=knobs.with_system, attempt=attempt, **extra)
    (out_dir / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    if records:
        say(f"dataset ({method}): {len(records)} rows ({' → '.join(str(o.rows_after) for o in ops)})")
    return manifest


def _source_rows(knobs: DataKnobs, available: int) -> int:
    """Rows taken from the sources: all max_rows, unless they could fill it and generated rows need room (the
    synthesized ones, and one variant per source row for an augmentation)."""
    if available < knobs.max_rows:
        return available
    n = max(1, knobs.max_rows - knobs.synthesize)
    return max(1, -(-n // 2)) if knobs.augment != "none" else n


def _gather(task: BenchmarkTask, sources: list[SourceChoice], knobs: DataKnobs, exclude_ids: set[str],
            ops: list[OpCount]) -> list[Pair]:
    """Extract → clean → deduplicate → rewrite to the benchmark's format; rows keep the source they came from."""
    from tools.dedup import exact_duplicates, near_duplicates

    rows: list[dict[str, Any]] = []
    for src in sources:
        got = load_source(task, src.name)
        rows += [dict(r, _source=src.name) for r in got[: max(src.max_rows * 4, src.max_rows)]]
    ops.append(OpCount(op="extract", rows_after=len(rows)))
    rows = [r for r in rows if task.row_ok(r)]
    ops.append(OpCount(op="clean (empty or unanswered rows dropped)", rows_after=len(rows)))
    drop = set(exact_duplicates([task.dedup_text(r) for r in rows]))
    rows = [r for i, r in enumerate(rows) if i not in drop]
    ops.append(OpCount(op="exact dedup", rows_after=len(rows)))
    drop = set(near_duplicates([task.dedup_text(r) for r in rows]))
    rows = [r for i, r in enumerate(rows) if i not in drop]
    ops.append(OpCount(op="near-duplicate removal (MinHash LSH)", rows_after=len(rows)))
    pairs = [(r, task.training_example({k: v for k, v in r.items() if k != "_source"}, knobs)) for r in rows]
    pairs = [(r, ex) for r, ex in pairs if ex.source_id not in exclude_ids]
    ops.append(OpCount(op=f"rewrite to the answer format; decontamination exclusions ({len(exclude_ids)} ids)",
                       rows_after=len(pairs)))
    return pairs


def _mix(pairs: list[Pair], knobs: DataKnobs, ops: list[OpCount]) -> list[Pair]:
    """Order the rows so that the first max_rows follow the mixture's shares (sources short of their share leave
    the rest to the others); without a mixture the shuffled order stands."""
    if not knobs.mixture:
        return pairs
    by_source: dict[str, list[Pair]] = {}
    for p in pairs:
        by_source.setdefault(p[0]["_source"], []).append(p)
    named = {s: w for s, w in knobs.mixture.items() if s in by_source}
    rest = [s for s in by_source if s not in named]
    left = max(0.0, 1.0 - sum(named.values()))
    shares = {**named, **{s: left / len(rest) for s in rest}} if rest else named
    total = sum(shares.values()) or 1.0
    quota = {s: round(knobs.max_rows * w / total) for s, w in shares.items()}
    head = [p for s in by_source for p in by_source[s][: quota.get(s, 0)]]
    taken = {id(p) for p in head}
    tail = [p for p in pairs if id(p) not in taken]
    ops.append(OpCount(op="mixture " + ", ".join(f"{s} {quota.get(s, 0)}" for s in by_source),
                       rows_after=len(pairs)))
    return head + tail


def _by_difficulty(pairs: list[Pair], knobs: DataKnobs, ops: list[OpCount],
                   rates: dict[str, float] | None) -> list[Pair]:
    """Keep the easier or the harder third: by the model's pass rate where it was sampled, else by the length of
    the reference solution (longer is harder: more steps)."""
    if knobs.difficulty == "any" or len(pairs) < 3:
        return pairs
    if rates is not None:
        hardness = {ex.source_id: 1.0 - rates.get(ex.source_id, 0.0) for _, ex in pairs}
        how = "the model's pass rate"
    else:
        hardness = {ex.source_id: float(len(ex.response.split())) for _, ex in pairs}
        how = "reference solution length"
    ordered = sorted(pairs, key=lambda p: hardness[p[1].source_id], reverse=knobs.difficulty == "harder")
    kept = ordered[: max(1, len(ordered) // 3)]
    ops.append(OpCount(op=f"difficulty: the {knobs.difficulty} third by {how}", rows_after=len(kept)))
    return kept


def rows_from_answers(task: BenchmarkTask, ex: TrainingExample, source: str, attempts: list, method: str):
    """The rows one question's graded answers give, and how many right answers lacked the answer line.

    Right means right by the scorer and written in the evaluation's answer format: the scorer may accept a bare
    last number that the format puts on an answer line, and training on it would teach the wrong habit."""
    right = _distinct([a.text for a in attempts if a.correct and task.answer_ok(a.text)])
    wrong = _distinct([a.text for a in attempts if not a.correct])
    unformatted = sum(a.correct and not task.answer_ok(a.text) for a in attempts)
    if method == "self_distill":
        return [(_with(ex, text, f"{ex.source_id}#{j}"), None, source, "self-sample")
                for j, text in enumerate(right)], unformatted
    if not wrong:
        return [], unformatted
    return [(_with(ex, right[0] if right else ex.response, ex.source_id), wrong[0], source,
             "self-sample pair" if right else "reference vs self-sample")], unformatted


def _sampled(task: BenchmarkTask, pairs: list[Pair], knobs: DataKnobs, out_dir: Path, models: Models, method: str,
             ops: list[OpCount], say: Callable[[str], None]):
    """The model's own answers to `knobs.questions` training questions, `knobs.samples` each, graded by the
    benchmark's scorer; self_distill keeps the distinct correct ones, dpo makes one (correct, incorrect) pair
    per question (the reference, in the answer format, stands in for a correct answer where none was sampled)."""
    import time

    from core.handoffs import Sampling
    from tools.sampling import sample_answers

    asked = pairs[: knobs.questions]
    by_id = {ex.source_id: (r["_source"], ex) for r, ex in asked}
    t0 = time.time()
    sampled = sample_answers(task, models.start, [{k: v for k, v in r.items() if k != "_source"} for r, _ in asked],
                             knobs, out_dir / "sampling", k=knobs.samples, temperature=knobs.sample_temperature,
                             provider=models.provider, on_gpu=models.on_gpu, seed=knobs.seed,
                             batch_size=models.batch_size, on_progress=say)
    seconds = time.time() - t0
    attempts = [a for s in sampled for a in s.attempts]
    ops.append(OpCount(op=f"sample {knobs.samples} answers per question at temperature {knobs.sample_temperature:g}",
                       rows_after=len(attempts)))
    rates = {s.source_id: s.pass_rate for s in sampled}
    keep = {ex.source_id for _, ex in _by_difficulty(asked, knobs, ops, rates)}
    chosen, per_question, unformatted = [], Counter(), 0
    for s in sampled:
        if s.source_id not in keep or s.source_id not in by_id:
            continue
        source, ex = by_id[s.source_id]
        made, n_unformatted = rows_from_answers(task, ex, source, s.attempts, method)
        unformatted += n_unformatted
        per_question[str(len(made))] += 1
        chosen += made
    dropped = f" ({unformatted} correct without the answer line left out)" if unformatted else ""
    ops.append(OpCount(op=("correct answers, deduplicated" if method == "self_distill"
                           else "pairs of a correct and an incorrect answer") + dropped, rows_after=len(chosen)))
    sampling = Sampling(model_dir=models.start, samples=knobs.samples, temperature=knobs.sample_temperature,
                        questions=len(sampled),
                        pass_rate=round(sum(a.correct for a in attempts) / max(1, len(attempts)), 4),
                        kept_per_question=dict(sorted(per_question.items())), seconds=round(seconds, 1))
    say(f"sampled {len(attempts)} answers to {len(sampled)} questions: pass rate {sampling.pass_rate:.3f}, "
        f"{len(chosen)} rows")
    return chosen, sampling


def _distinct(texts: list[str]) -> list[str]:
    seen, out = set(), []
    for t in texts:
        key = " ".join(t.split())
        if key and key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _with(ex: TrainingExample, response: str, source_id: str) -> TrainingExample:
    return TrainingExample(ex.messages, response, source_id, ex.input_text, ex.tools)


def _generated(task: BenchmarkTask, pairs: list[Pair], knobs: DataKnobs, out_dir: Path, models: Models, index: Any,
               say: Callable[[str], None]):
    """The generator's rows (augmentations of the kept rows, and new ones), minus any that share an n-gram with
    the test set."""
    from core.handoffs import Generation
    from tools.decontam import find_contamination
    from tools.generate import Student, generate
    from tools.sampling import grade

    student = Student(models.start, models.provider, models.on_gpu, models.batch_size)
    made_all, stats = [], []
    jobs = ([(knobs.augment, None)] if knobs.augment != "none" else []) + \
        ([("synthesize", knobs.synthesize)] if knobs.synthesize else [])
    for mode, count in jobs:
        made, st = generate(task, models.generator, mode, pairs, knobs, out_dir, student=student, count=count,
                            grade=lambda row, text: grade(task, {k: v for k, v in row.items() if k != "_source"},
                                                          knobs, text),
                            on_progress=say)
        if index is not None and made:
            hit = find_contamination(((g.example.source_id, g.example.decontam_text) for g in made), index)
            if hit:
                st.dropped["shares a 13-gram with the test set"] += len(hit)
                made = [g for g in made if g.example.source_id not in hit]
                say(f"dropped {len(hit)} generated rows that share an n-gram with the test set")
        stats.append(Generation(generator=models.generator, mode=mode, asked=st.asked, kept=len(made),
                                dropped=dict(st.dropped)))
        made_all += made
    return made_all, stats


def _render(tokenizer, eot: str, chosen: list[tuple[TrainingExample, str | None, str, str]], cap: int,
            cutoff_len: int) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """LlamaFactory records, prompts rendered as the evaluation renders them; rows over `cutoff_len` are skipped
    (truncation would cut off the answer line the scorer reads)."""
    from tools.sft_data import preference_record, record_tokens, sft_record

    records, meta = [], []
    for ex, rejected, origin, kind in chosen:
        if len(records) >= cap:
            break
        prompt = tokenizer.apply_chat_template(ex.messages, tools=ex.tools, tokenize=False, add_generation_prompt=True)
        record = (sft_record(prompt, ex.response, eot) if rejected is None
                  else preference_record(prompt, ex.response, rejected, eot))
        n_tokens = record_tokens(tokenizer, record)  # the count LlamaFactory itself truncates by
        if n_tokens > cutoff_len:
            continue
        records.append(record)
        text = ex.decontam_text + (f"\n{rejected}" if rejected is not None else "")
        meta.append({"source_id": ex.source_id, "input": ex.input_text, "decontam": text, "tokens": n_tokens,
                     "from": origin, "kind": kind, **({"tools": ex.tools} if ex.tools else {})})
    return records, meta


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
