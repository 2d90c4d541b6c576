"""The model's own answers to training questions, graded by the benchmark's own scorer: what self-distillation
(rejection-sampling fine-tuning) keeps and what DPO pairs.

A training row becomes the task's `graded_sample` (the evaluation's full prompt as input, the reference in the
scorer's form as target), and one inspect eval runs them all, `k` epochs each, through the evaluation's own providers
(prefixcache/ or hf/ on CPU, vllm/ on GPU), with the task's generation budget, sampling at the given temperature, and
scored by the canonical scorer. The answers land in `sampled.jsonl`, which a later call with the same model, k,
temperature and budget reuses instead of sampling again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import EvalFailed, InputError, ToolError
from core.workspace import INSPECT_DIR
from tasks.base import BenchmarkTask
from tools.evaluate import _forwarded, _output_text, default_batch_size, provider_model_args
from tools.model import model_sha256

if TYPE_CHECKING:
    from core.handoffs import DataKnobs

SAMPLED_FILE = "sampled.jsonl"
GRADER_MODEL = "none/grader"
"""The model name a graded text is attributed to (tool calls are then read with inspect's generic parser)."""


@dataclass(frozen=True)
class Attempt:
    """One sampled answer and the canonical scorer's verdict on it."""

    text: str
    correct: bool
    value: float
    """The scorer's value as a number (1.0 for a correct answer on an accuracy benchmark)."""


@dataclass
class Sampled:
    """A training question and the model's sampled answers to it."""

    source_id: str
    row: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def pass_rate(self) -> float:
        return sum(a.correct for a in self.attempts) / len(self.attempts) if self.attempts else 0.0


def sample_answers(task: BenchmarkTask, model_dir: str, rows: list[dict[str, Any]], knobs: DataKnobs, out_dir: Path,
                   *, k: int, temperature: float, provider: str, on_gpu: bool, seed: int,
                   batch_size: int | None = None,
                   on_progress: Callable[[str], None] | None = None) -> list[Sampled]:
    """`k` sampled answers from `model_dir` to each training row, each graded by the canonical scorer; one
    `Sampled` per gradable row, in the rows' order (a row the task cannot grade is left out and reported; rows
    with the same source id count once). Answers already in `out_dir/sampled.jsonl` for the same model, k,
    temperature and max_tokens, and the same prompt, target and choices, are reused; only the missing rows are
    sampled, in one inspect eval logged under `out_dir/inspect`. A failed eval is `EvalFailed`."""
    if not task.grades_training_rows:
        raise ToolError(f"{task.name} cannot grade its training rows with its own scorer: no self-distillation or "
                        "DPO for it")
    if k < 1 or temperature <= 0:
        raise ToolError(f"sampling needs k >= 1 and a temperature above 0 (got k={k}, temperature={temperature})")
    samples, by_id = _graded_samples(task, rows, knobs, on_progress)
    max_tokens = task.generation(on_gpu).max_tokens
    key = {"model_sha256": model_sha256(model_dir), "samples": k, "temperature": temperature,
           "max_tokens": max_tokens}
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = _read_cache(out_dir / SAMPLED_FILE)
    # An answer is reused for the same question shown the same way (a prompt, or a choice order, that changed with
    # the knobs is sampled again), from the same model, k, temperature and budget.
    digests = {str(s.id): _digest(s) for s in samples}
    done = {sid: entry for sid, entry in cache.items()
            if sid in by_id and _key(entry) == key and entry.get("sample_sha256") == digests[sid]}
    todo = [s for s in samples if str(s.id) not in done]
    if on_progress and done:
        on_progress(f"reusing {len(done)} sampled question(s) from {out_dir / SAMPLED_FILE}")
    if todo:
        fresh = _run(task, model_dir, todo, out_dir, k=k, temperature=temperature, max_tokens=max_tokens,
                     provider=provider, seed=seed, batch_size=batch_size, on_progress=on_progress)
        for sid in (str(s.id) for s in todo):  # in the rows' order
            entry = {"source_id": sid, **key, "sample_sha256": digests[sid],
                     "attempts": [asdict(a) for a in fresh[sid]]}
            cache[sid] = done[sid] = entry
        _write_cache(out_dir / SAMPLED_FILE, cache)
    return [Sampled(str(s.id), by_id[str(s.id)], [Attempt(**a) for a in done[str(s.id)]["attempts"]])
            for s in samples]


def grade(task: BenchmarkTask, row: dict[str, Any], knobs: DataKnobs, text: str) -> bool:
    """Whether `text`, as the answer to a training row, is correct by the canonical scorer: the row's graded
    sample, the task's graded solver with `text` standing in for the model's output, then the scorer. No model is
    called. A task whose scorer runs code in a sandbox is graded in a one-sample inspect eval whose (mock) model
    answers `text`, so the sandbox is the evaluation's own."""
    sample = task.graded_sample(row, knobs)
    canonical = task.inspect_task()
    if canonical.sandbox is not None:
        return _grade_in_sandbox(task, sample, text)
    import asyncio

    from inspect_ai.model import ModelName
    from inspect_ai.scorer import Target
    from inspect_ai.solver import TaskState

    messages = list(sample.input) if not isinstance(sample.input, str) else []
    state = TaskState(ModelName(GRADER_MODEL), str(sample.id), 1, sample.input, messages,
                      target=Target(sample.target), choices=sample.choices,
                      metadata=dict(sample.metadata or {}))

    async def answer(state: TaskState, **_: Any) -> TaskState:
        output = _as_output(text, state.tools)
        state.output = output
        state.messages.append(output.message)
        return state

    async def run() -> Any:
        done = await task.graded_solver()(state, answer)
        scorer = canonical.scorer[0] if isinstance(canonical.scorer, list) else canonical.scorer
        return await scorer(done, Target(sample.target))

    return task.sample_value(asyncio.run(run())) >= 1.0


# -- internals ---------------------------------------------------------------------------------------------


def _graded_samples(task: BenchmarkTask, rows: list[dict[str, Any]], knobs: DataKnobs,
                    on_progress: Callable[[str], None] | None) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    samples, by_id, skipped = [], {}, []
    for row in rows:
        try:
            sample = task.graded_sample(row, knobs)
        except InputError as e:
            skipped.append(e.message)
            continue
        if str(sample.id) not in by_id:
            by_id[str(sample.id)] = row
            samples.append(sample)
    if skipped and on_progress:
        on_progress(f"{len(skipped)} row(s) cannot be graded and are not sampled, e.g. {skipped[0]}")
    if not samples:
        raise ToolError(f"none of the {len(rows)} row(s) can be graded by {task.name}'s scorer"
                        + (f" (e.g. {skipped[0]})" if skipped else ""))
    return samples, by_id


def _run(task: BenchmarkTask, model_dir: str, samples: list[Any], out_dir: Path, *, k: int, temperature: float,
         max_tokens: int, provider: str, seed: int, batch_size: int | None,
         on_progress: Callable[[str], None] | None) -> dict[str, list[Attempt]]:
    import inspect_ai
    from inspect_ai import Task
    from inspect_ai.dataset import MemoryDataset

    canonical = task.inspect_task()
    batch_size = batch_size or default_batch_size(provider, len(samples) * k)
    model_args = provider_model_args(task, model_dir, provider, batch_size=batch_size, greedy=False,
                                     on_progress=on_progress)
    # vLLM seeds each request with the eval's seed, so the k epochs of one prompt would be k copies of one answer:
    # there the seed goes to the server (its sampler's own generator) instead. The local providers seed once.
    eval_seed: int | None = seed
    if provider == "vllm":
        model_args["seed"], eval_seed = seed, None
    probe = Task(dataset=MemoryDataset(samples, name=f"{task.name}_train"), solver=task.graded_solver(),
                 scorer=canonical.scorer, sandbox=canonical.sandbox, name=f"{task.name}_sampling")
    if on_progress:
        on_progress(f"sampling {k} answer(s) to each of {len(samples)} training question(s) from {model_dir} with "
                    f"{provider}/, batch {batch_size} (temperature {temperature}, max_tokens {max_tokens})")
    t0 = time.time()
    with _forwarded("tools.prefix_cache", on_progress):
        logs = inspect_ai.eval(
            probe, model=f"{provider}/{model_dir}", model_args=model_args, epochs=k, temperature=temperature,
            max_tokens=max_tokens, seed=eval_seed, log_dir=str(out_dir / INSPECT_DIR), log_format="json",
            display="none", max_connections=batch_size, score_display=False,
        )
    log = logs[0]
    if log.status != "success" or not log.samples:
        raise EvalFailed(f"sampling from {model_dir} did not finish ({log.status}): "
                         f"{log.error.message if log.error else 'no samples scored'}")
    attempts: dict[str, list[tuple[int, Attempt]]] = {}
    for s in log.samples:
        score = next(iter(s.scores.values())) if s.scores else None
        value = task.sample_value(score) if score is not None else 0.0
        value = 0.0 if math.isnan(value) else value
        attempts.setdefault(str(s.id), []).append((s.epoch, Attempt(_output_text(s.output), value >= 1.0, value)))
    missing = [str(s.id) for s in samples if str(s.id) not in attempts]
    if missing:
        raise EvalFailed(f"sampling from {model_dir} returned no answers for {len(missing)} question(s), e.g. "
                         f"{missing[0]}")
    if on_progress:
        n = sum(len(v) for v in attempts.values())
        right = sum(a.correct for v in attempts.values() for _, a in v)
        on_progress(f"sampled {n} answer(s) in {time.time() - t0:.0f} s, {right} graded correct")
    return {sid: [a for _, a in sorted(v, key=lambda x: x[0])] for sid, v in attempts.items()}


def _key(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in ("model_sha256", "samples", "temperature", "max_tokens")}


def _digest(sample: Any) -> str:
    """What the model is shown and graded against: the prompt's messages, the target and the choices."""
    messages = [{"role": m.role, "content": m.text} for m in sample.input] if not isinstance(sample.input, str) \
        else sample.input
    shown = {"input": messages, "target": sample.target, "choices": sample.choices}
    return hashlib.sha256(json.dumps(shown, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """What an earlier call sampled, by source id (a torn or foreign line is ignored: it is sampled again)."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            attempts = [Attempt(**a) for a in entry["attempts"]]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(entry.get("source_id"), str) and attempts:
            out[entry["source_id"]] = entry
    return out


def _write_cache(path: Path, cache: dict[str, dict[str, Any]]) -> None:
    """Written whole and renamed into place, so a killed run leaves the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for entry in cache.values():
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _as_output(text: str, tools: list[Any]) -> Any:
    """`text` as a model's output, its tool calls (when the state offers tools) read back with the parser inspect's
    hf/ provider uses for a model family it has no rule for."""
    from inspect_ai.model import ChatCompletionChoice, ModelOutput

    if not tools:
        return ModelOutput.from_content(GRADER_MODEL, text)
    from inspect_ai.model._providers.util import HFHandler

    message = HFHandler(GRADER_MODEL).parse_assistant_response(text, tools)
    return ModelOutput(model=GRADER_MODEL, choices=[ChatCompletionChoice(message=message, stop_reason="stop")])


def _grade_in_sandbox(task: BenchmarkTask, sample: Any, text: str) -> bool:
    import inspect_ai
    from inspect_ai import Task
    from inspect_ai.dataset import MemoryDataset
    from inspect_ai.model import ModelUsage, get_model

    canonical = task.inspect_task()
    output = _as_output(text, [])
    output.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)  # mockllm would count with tiktoken
    probe = Task(dataset=MemoryDataset([sample]), solver=task.graded_solver(), scorer=canonical.scorer,
                 sandbox=canonical.sandbox, name=f"{task.name}_grade")
    with tempfile.TemporaryDirectory(prefix="grade-") as logs:  # the log is read (lazily) before it goes
        [log] = inspect_ai.eval(probe, model=get_model("mockllm/model", custom_outputs=[output]), log_dir=logs,
                                display="none", score_display=False)
        if log.status != "success" or not log.samples or not log.samples[0].scores:
            raise EvalFailed(f"grading one answer did not finish ({log.status}): "
                             f"{log.error.message if log.error else 'no score'}")
        return task.sample_value(next(iter(log.samples[0].scores.values()))) >= 1.0
