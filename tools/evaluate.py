"""Run the benchmark's canonical inspect-ai evaluation and turn its log into evidence for the next decision."""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from core.errors import EvalFailed, EvalRefused
from core.handoffs import EvalReport, FailureMode
from core.workspace import INSPECT_DIR, METRICS_FILE, SAMPLES_FILE, SUMMARY_FILE
from tasks.base import BenchmarkTask, GenerationSettings, sample_floor
from tasks.judge import judge_usage
from tools.model import model_sha256

SUMMARY_SAMPLES = 15


def check_limit(limit: int, benchmark_size: int, full_size: int | None = None) -> None:
    """A comparison uses at least the floor, and no more samples than the benchmark has."""
    floor = sample_floor(benchmark_size, full_size)
    if benchmark_size < floor:
        raise EvalRefused(f"the test set has {benchmark_size} samples, fewer than the floor of {floor} "
                          "(max(32, ceil(5%))): no comparison on it would count")
    if limit < floor:
        raise EvalRefused(f"refusing to compare on {limit} samples: the floor is {floor} "
                          f"(max(32, ceil(5% of {benchmark_size})))")
    if limit > benchmark_size:
        raise EvalRefused(f"--eval-limit {limit} is above the {benchmark_size} samples the benchmark has")


CPU_BATCH_CAP = 128
"""prefixcache/ keeps each row's own keys and values (about 1 MB per row for the embedded student at 256 new
tokens); past this many rows a batch gains little and memory grows."""


def default_batch_size(provider: str, limit: int) -> int:
    """prefixcache/ runs the whole evaluation as one batch up to the cap: measured on 2 cores, a 66-sample batch
    took 182 s where batches of 8 took over 5 minutes. hf/ copies every row's prefix per step, so it stays small;
    vllm/ schedules its own batches."""
    if provider == "prefixcache":
        return min(limit, CPU_BATCH_CAP)
    return 8 if provider == "hf" else 32


VLLM_MEMORY_UTILIZATION = 0.85
"""vLLM's share of each GPU: training never runs during an evaluation, so it may take most of the memory."""


def vllm_args(model_dir: str, on_progress: Callable[[str], None] | None = None) -> dict:
    """vLLM's model args: its memory share, and one replica per GPU or tensor parallelism (tools.parallel)."""
    import torch

    from tools.parallel import Shape, vllm_parallelism

    args: dict = {"gpu_memory_utilization": VLLM_MEMORY_UTILIZATION}
    gpus = torch.cuda.device_count()
    if gpus > 1 and (Path(model_dir) / "config.json").is_file():
        gib = min(torch.cuda.get_device_properties(i).total_memory for i in range(gpus)) / (1 << 30)
        args |= vllm_parallelism(Shape.from_model(model_dir), gpus=gpus, gpu_gib=gib,
                                 utilization=VLLM_MEMORY_UTILIZATION)
    if on_progress:
        on_progress(f"vLLM on {gpus} GPU(s): {args}")
    return args


def choose_provider(requested: str, on_gpu: bool) -> str:
    if requested != "auto":
        return requested
    return "vllm" if on_gpu else "prefixcache"


def provider_model_args(task: BenchmarkTask, model_dir: str, provider: str, *, batch_size: int, greedy: bool,
                        on_progress: Callable[[str], None] | None = None) -> dict:
    """The model args an evaluation of `model_dir` with `provider` passes to inspect (and the provider registered):
    vLLM's memory share and parallelism, or the local providers' batch size and sampling switch; the task's own chat
    template where it has one."""
    if provider == "prefixcache":
        import tools._registry  # noqa: F401  registers the provider even where the entry point is absent
    if provider == "vllm":
        model_args: dict = vllm_args(model_dir, on_progress)
    else:  # inspect's local providers sample unless told otherwise
        model_args = {"batch_size": batch_size, "do_sample": not greedy}
    if template := task.chat_template(model_dir):
        model_args["chat_template"] = template
    return model_args


def run_eval(task: BenchmarkTask, model_dir: str, out_dir: Path, *, limit: int, on_gpu: bool, provider: str,
             batch_size: int | None, seed: int, on_progress: Callable[[str], None] | None = None, start: int = 0,
             gen: GenerationSettings | None = None) -> EvalReport:
    """Evaluate `model_dir` on `limit` test samples from the `start`-th on (the first ones by default) with the
    canonical task; writes the raw inspect log, `metrics.json`, per-sample scores and `sample_summary.md` under
    `out_dir`. `gen` overrides the task's generation settings for this device (the final protocol's attempts)."""
    import inspect_ai

    gen = gen or task.generation(on_gpu)
    batch_size = batch_size or default_batch_size(provider, limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_args = provider_model_args(task, model_dir, provider, batch_size=batch_size, greedy=gen.greedy,
                                     on_progress=on_progress)
    which = {"limit": limit} if start == 0 else {"sample_id": sample_ids(task, start, limit)}
    if on_progress:
        where = "" if start == 0 else f" (samples {start + 1}-{start + limit})"
        on_progress(f"evaluating {model_dir} on {limit} samples{where} with {provider}/, batch {batch_size} "
                    f"(max_tokens {gen.max_tokens})")
    t0 = time.time()
    with _forwarded("tools.prefix_cache", on_progress):
        logs = inspect_ai.eval(
            task.inspect_task(), model=f"{provider}/{model_dir}", model_args=model_args, **which,
            max_tokens=gen.max_tokens, seed=seed, log_dir=str(out_dir / INSPECT_DIR),
            log_format="json", display="none", max_connections=batch_size, score_display=False,
        )
    runtime = time.time() - t0
    log = logs[0]
    if log.status != "success" or not log.samples:
        raise EvalFailed(f"evaluation of {model_dir} did not finish ({log.status}): "
                         f"{log.error.message if log.error else 'no samples scored'}")
    samples = [_sample_view(task, s) for s in log.samples]
    score, stderr = task.score_samples([next(iter(s.scores.values())) for s in log.samples])
    report = EvalReport(
        model_dir=str(model_dir), model_sha256=model_sha256(model_dir), accuracy=score, stderr=stderr,
        n=len(samples), limit=limit, canonical=gen.canonical, max_tokens=gen.max_tokens, provider=provider,
        log_path=str(Path(log.location)), metrics_path=str(out_dir / METRICS_FILE),
        summary_path=str(out_dir / SUMMARY_FILE), failure_modes=classify_failures(task, samples, gen.max_tokens),
        runtime_s=round(runtime, 1), metric=task.metric,
        samples={x["id"]: x["value"] for x in samples if not math.isnan(x["value"])},
    )
    with (out_dir / SAMPLES_FILE).open("w") as f:  # per-sample scores: what paired comparisons read
        for s in samples:
            f.write(json.dumps({"id": s["id"], "value": None if math.isnan(s["value"]) else s["value"]}) + "\n")
    (out_dir / METRICS_FILE).write_text(json.dumps({
        "accuracy": report.accuracy, "stderr": report.stderr, "metric": task.metric, "n": report.n, "limit": limit,
        "seed": seed, "model_path": report.model_dir, "model_sha256": report.model_sha256, "provider": provider,
        "max_tokens": gen.max_tokens, "canonical": gen.canonical, "runtime_s": report.runtime_s,
        "correct": sum(x["correct"] for x in samples),
        "failure_categories": {c: sum(m.count for m in report.failure_modes if m.category == c)
                               for c in sorted({m.category for m in report.failure_modes})},
        "note": None if gen.canonical else (f"CPU profile: max_tokens capped at {gen.max_tokens}, below the "
                                            f"benchmark's {task.max_tokens.canonical}; not canonical"),
    }, indent=2))
    write_sample_summary(samples, out_dir / SUMMARY_FILE, seed=seed, header=report)
    judge = judge_usage(log, task.judge)
    if judge is not None:  # judged benchmarks: what the judge cost, beside the score it gave
        metrics = json.loads((out_dir / METRICS_FILE).read_text())
        (out_dir / METRICS_FILE).write_text(json.dumps({**metrics, "judge": {"model": task.judge, **judge}}, indent=2))
        if on_progress:
            on_progress(f"judge {task.judge}: {judge['input_tokens']} input and {judge['output_tokens']} output tokens")
    return report


def sample_ids(task: BenchmarkTask, start: int, count: int) -> list[str]:
    """The ids of `count` test samples from the `start`-th on, in the canonical dataset's order."""
    return [str(s.id) for s in task.inspect_task().dataset[start:start + count]]


def read_sample_scores(eval_dir: Path) -> dict[str, float]:
    """Per-sample scores an evaluation wrote, by sample id (empty when it wrote none)."""
    path = eval_dir / SAMPLES_FILE
    if not path.is_file():
        return {}
    return {row["id"]: row["value"] for row in map(json.loads, path.read_text().splitlines())
            if row and row["value"] is not None}


@contextmanager
def _forwarded(logger_name: str, on_progress: Callable[[str], None] | None, every_s: float = 30.0):
    """Pass a provider's progress messages (rows still generating, batches done) to the run's progress line, at
    most one every `every_s` seconds: inspect's own display is off, and an evaluation takes minutes on CPU."""
    if on_progress is None:
        yield
        return
    last = [0.0]

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            now = time.monotonic()
            if now - last[0] >= every_s:
                last[0] = now
                on_progress(record.getMessage())

    source = logging.getLogger(logger_name)
    handler, level = Handler(logging.INFO), source.level
    source.addHandler(handler)
    source.setLevel(logging.INFO)
    try:
        yield
    finally:
        source.removeHandler(handler)
        source.setLevel(level)


def _sample_view(task: BenchmarkTask, sample) -> dict:
    score = next(iter(sample.scores.values()))
    value = task.sample_value(score)
    user = next((m.text for m in reversed(sample.messages) if m.role == "user"), str(sample.input))
    return {
        "id": str(sample.id), "value": value, "correct": value >= 1.0, "answer": score.answer, "input": user,
        "target": sample.target if isinstance(sample.target, str) else ", ".join(sample.target),
        "output": _output_text(sample.output), "stop_reason": sample.output.stop_reason,
        "output_tokens": sample.output.usage.output_tokens if sample.output.usage else None,
    }


def _output_text(output) -> str:
    """The completion, with any tool calls the provider parsed out of it written back as text (a function-calling
    benchmark's answer is the call)."""
    calls = (output.message.tool_calls or []) if output.choices else []
    text = "".join(f"\n<tool_call>\n{json.dumps({'name': c.function, 'arguments': c.arguments})}\n</tool_call>"
                   for c in calls)
    return (output.completion + text).strip() if text else output.completion


def write_sample_summary(samples: list[dict], path: Path, *, seed: int, header: EvalReport) -> None:
    """15 random samples (fixed seed), each with score, input, target and model output."""
    picked = random.Random(seed).sample(samples, min(SUMMARY_SAMPLES, len(samples)))
    lines = [
        f"# Sample summary: {header.model_dir}",
        "",
        f"{header.metric} {header.accuracy:.4f} ± {header.stderr:.4f} on {header.n} samples; "
        f"provider {header.provider}; "
        f"max_tokens {header.max_tokens}{'' if header.canonical else ' (CPU profile, not canonical)'}",
        "",
    ]
    for i, s in enumerate(picked, 1):
        verdict = ("not scored" if math.isnan(s["value"]) else "correct" if s["correct"]
                   else "wrong" if s["value"] <= 0 else f"partly right ({s['value']:.2f})")
        lines += [
            f"## {i}. {s['id']}: {verdict} (extracted {s['answer']!r})",
            "",
            "**Input**",
            "",
            "```",
            s["input"],
            "```",
            "",
            f"**Target**: {s['target']}",
            "",
            f"**Output** (stop: {s['stop_reason']})",
            "",
            "```",
            s["output"],
            "```",
            "",
        ]
    path.write_text("\n".join(lines))


def classify_failures(task: BenchmarkTask, samples: list[dict], max_tokens: int) -> list[FailureMode]:
    """Label every wrong sample with one failure mode; each mode carries its category, count and examples."""
    labels: dict[str, tuple[str, list[str]]] = {}
    counts: Counter[str] = Counter()
    for s in samples:
        if s["correct"]:
            continue
        label, category = _failure_label(task, s, max_tokens)
        counts[label] += 1
        examples = labels.setdefault(label, (category, []))[1]
        if len(examples) < 3:
            examples.append(f"{s['id']}: target {s['target']}, got {s['answer']!r}; output ends {s['output'][-160:]!r}")
    return [
        FailureMode(label=label, category=labels[label][0], count=n, examples=labels[label][1])
        for label, n in counts.most_common()
    ]


def _failure_label(task: BenchmarkTask, s: dict, max_tokens: int) -> tuple[str, str]:
    out = s["output"]
    if not out.strip():
        return "empty output", "inference_template"
    if _repeats(out):
        return "repetition loop", "training"
    if s["stop_reason"] == "max_tokens" or (s["output_tokens"] or 0) >= max_tokens:
        return "cut off at the token limit", "training"
    if not task.answer_ok(out):
        return "no answer in the expected format", "inference_template"
    return task.failure_label(s) or ("answer in the expected format, but wrong", "data")


def _repeats(text: str, n: int = 8, times: int = 4) -> bool:
    """A word n-gram that occurs `times` or more: the decoding fell into a loop."""
    words = re.findall(r"\S+", text)
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return bool(grams) and grams.most_common(1)[0][1] >= times
