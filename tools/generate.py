"""Synthesis and augmentation with a local model: questions reworded, other worked solutions, harder variants and
new questions, written by the generator from the rows construction kept.

The generator is the student (the model this iteration starts from, run through the evaluation's own provider)
or an OpenAI-compatible server on a local host; anything else is refused before any request (`generator_problem`:
PostTrainBench bans training data written by API models). Every request goes through inspect-ai, like the
evaluation. Outputs are cached in the iteration's data folder, so a rebuild or a resumed run does not ask again.
What comes back is only a candidate: construction decontaminates it, and validation checks it like any other row.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.errors import EvalFailed, GuardViolation
from core.handoffs import DataKnobs
from core.specs import STUDENT, generator_problem
from tasks.base import BenchmarkTask, TrainingExample

Mode = Literal["paraphrase", "alt_solution", "harder", "synthesize"]
MAX_TOKENS = 512
"""A question and its worked solution fit in this many tokens for every free-text benchmark here."""
SYNTH_EXAMPLES = 3
"""Kept rows shown as examples in each synthesis prompt."""
CACHE_FILE = "generated.jsonl"
_SECTIONS = re.compile(r"QUESTION:\s*(?P<q>.*?)\s*SOLUTION:\s*(?P<s>.*\S)", re.DOTALL)


@dataclass(frozen=True)
class Generated:
    """One generated example and where it came from."""

    example: TrainingExample
    provenance: dict[str, str]
    """generator, template (the prompt file) and source row(s)."""


@dataclass
class GenerationStats:
    asked: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    """Why candidates were dropped, with counts."""


@dataclass(frozen=True)
class Student:
    """How to run the student as a generator: the evaluation's provider and settings on this device."""

    model_dir: str
    provider: str
    on_gpu: bool
    batch_size: int | None = None


def check_generator(spec: str) -> None:
    """The hard rule, applied where the requests would be made."""
    if problem := generator_problem(spec):
        raise GuardViolation(problem)


def generate(task: BenchmarkTask, spec: str, mode: Mode, items: list[tuple[dict[str, Any], TrainingExample]],
             knobs: DataKnobs, out_dir: Path, *, student: Student, count: int | None = None,
             grade: Callable[[dict[str, Any], str], bool] | None = None,
             on_progress: Callable[[str], None] | None = None) -> tuple[list[Generated], GenerationStats]:
    """Candidates written by the generator `spec` from `items` (the kept rows and their examples): one per item
    for the augmentations, `count` for synthesis. `grade(row, text)` checks an alternative solution against the
    row's reference with the benchmark's own scorer."""
    check_generator(spec)  # before any model is loaded or any request made
    import prompts

    rng = random.Random(knobs.seed)
    template = f"generate/{mode}"
    common = {"task_description": task.description, "answer_format": task.answer_line_hint}
    requests: list[tuple[str, list[tuple[dict[str, Any], TrainingExample]]]] = []
    if mode == "synthesize":
        for _ in range(count or 0):
            shown = rng.sample(items, min(SYNTH_EXAMPLES, len(items)))
            examples = [{"question": ex.input_text, "solution": ex.response} for _, ex in shown]
            requests.append((prompts.render(template, examples=examples, **common), shown))
    else:
        for row, ex in items:
            requests.append((prompts.render(template, question=ex.input_text, solution=ex.response, **common),
                             [(row, ex)]))
    stats = GenerationStats(asked=len(requests))
    if not requests:
        return [], stats
    outputs = _complete(task, spec, [p for p, _ in requests], knobs.sample_temperature, out_dir, student, on_progress)
    kept: list[Generated] = []
    for i, ((_, shown), text) in enumerate(zip(requests, outputs, strict=True)):
        made = _candidate(task, mode, shown, text, knobs, grade)
        if isinstance(made, str):
            stats.dropped[made] += 1
            continue
        source = ",".join(ex.source_id for _, ex in shown)
        example = TrainingExample(made.messages, made.response, f"gen-{mode}-{i}-{knobs.seed}:{source}",
                                  made.input_text, made.tools)
        kept.append(Generated(example, {"generator": spec, "template": f"prompts/{template}.md",
                                        "source_rows": source}))
    stats.kept = len(kept)
    if on_progress:
        why = ", ".join(f"{n} {k}" for k, n in stats.dropped.most_common())
        on_progress(f"generator {spec} ({mode}): {stats.kept} of {stats.asked} candidates kept"
                    + (f"; dropped: {why}" if why else ""))
    return kept, stats


def _candidate(task: BenchmarkTask, mode: Mode, shown: list[tuple[dict[str, Any], TrainingExample]], text: str,
               knobs: DataKnobs, grade: Callable[[dict[str, Any], str], bool] | None) -> TrainingExample | str:
    """The candidate as a training example, or why it was dropped."""
    m = _SECTIONS.search(text)
    if not m:
        return "not in the QUESTION/SOLUTION form"
    question, solution = m["q"].strip(), m["s"].strip()
    row, source = shown[0]
    if mode == "paraphrase":  # the reference solution stays; only the wording of the question changes
        if _norm(question) == _norm(source.input_text):
            return "question unchanged"
        solution = source.response
    elif mode == "alt_solution":  # the question stays; the solution must reach the reference answer
        question = source.input_text
        if _norm(solution) == _norm(source.response):
            return "solution unchanged"
        if grade is None or not grade(row, solution):
            return "answer differs from the reference"
    elif any(_norm(question) == _norm(ex.input_text) for _, ex in shown):
        return "question copied from an example"
    if not question or not task.answer_ok(solution):
        return f"no answer in the form {task.answer_line_hint}"
    return task.example_from_text(question, solution, source.source_id, knobs)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _complete(task: BenchmarkTask, spec: str, prompts_: list[str], temperature: float, out_dir: Path,
              student: Student, on_progress: Callable[[str], None] | None) -> list[str]:
    """The generator's completion of each prompt, from the cache where it holds one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_path = out_dir / CACHE_FILE
    who = f"{spec}:{student.model_dir}" if spec == STUDENT else spec
    keys = [hashlib.sha256(json.dumps([who, temperature, p]).encode()).hexdigest() for p in prompts_]
    cache: dict[str, str] = {}
    if cache_path.is_file():
        for line in cache_path.read_text(encoding="utf-8").splitlines():
            try:  # a line torn by a kill mid-append is asked again, as sampling's cache does
                entry = json.loads(line)
                cache[entry["key"]] = entry["output"]
            except (ValueError, KeyError, TypeError):
                continue
    todo = [i for i, k in enumerate(keys) if k not in cache]
    if todo:
        if on_progress:
            on_progress(f"generator {spec}: {len(todo)} requests ({len(prompts_) - len(todo)} cached)")
        for i, text in zip(todo, _run(task, spec, [prompts_[i] for i in todo], temperature, out_dir, student),
                           strict=True):
            cache[keys[i]] = text
            with cache_path.open("a", encoding="utf-8") as f:  # appended as they come: a crash keeps the rest
                f.write(json.dumps({"key": keys[i], "output": text}) + "\n")
    return [cache[k] for k in keys]


def _run(task: BenchmarkTask, spec: str, prompts_: list[str], temperature: float, out_dir: Path,
         student: Student) -> list[str]:
    import inspect_ai
    from inspect_ai import Task
    from inspect_ai.dataset import MemoryDataset, Sample
    from inspect_ai.solver import generate

    job = Task(dataset=MemoryDataset([Sample(input=p, id=i) for i, p in enumerate(prompts_)]), solver=generate(),
               name="generator")
    common = {"temperature": temperature, "max_tokens": MAX_TOKENS, "log_dir": str(out_dir / "generator_logs"),
              "log_format": "json", "display": "none", "score": False}
    if spec == STUDENT:
        from tools.evaluate import provider_model_args

        batch = student.batch_size or len(prompts_)
        args = provider_model_args(task, student.model_dir, student.provider, batch_size=batch, greedy=False)
        logs = inspect_ai.eval(job, model=f"{student.provider}/{student.model_dir}", model_args=args,
                               max_connections=batch, **common)
    else:
        from inspect_ai.model import get_model

        from core.specs import parse_spec

        parsed = parse_spec(spec)
        model = get_model(f"openai/{parsed.model}", base_url=parsed.base_url, responses_api=False,
                          api_key=parsed.api_key.get_secret_value())
        logs = inspect_ai.eval(job, model=model, max_connections=8, **common)
    log = logs[0]
    if log.status != "success" or not log.samples:
        raise EvalFailed(f"generator {spec} did not finish ({log.status}): "
                         f"{log.error.message if log.error else 'no outputs'}")
    by_id = {int(s.id): s.output.completion for s in log.samples}
    return [by_id.get(i, "") for i in range(len(prompts_))]
