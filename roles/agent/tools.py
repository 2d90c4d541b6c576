"""The tools the LLM roles act through. Each is a typed function whose Google-style docstring is its schema.

Infrastructure (the task, the experiment memory, the inputs of the current decision) reaches a tool through
`runtime: ToolRuntime[Any]`, whose context is a `ToolEnv`; LangGraph injects it and hides it from the model. A
tool the model used wrongly raises `ToolError`; the agent loop turns it into a ToolMessage so the model can
correct itself. Any other exception is a bug and propagates.

Tools only read and check; generation settings are not reachable from any of them (hard rule).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.tools import tool
from langgraph.prebuilt import ToolRuntime

from core.errors import SourceError, ToolError

if TYPE_CHECKING:
    from core.handoffs import (
        Best,
        DataSelection,
        DatasetManifest,
        EvalReport,
        Evidence,
        IterationPlan,
        ValidationFindings,
        ValidationVerdict,
    )
    from memory.store import ExperimentMemory
    from tasks.base import BenchmarkTask

MAX_TEXT = 600
"""Characters of any one quoted text (rows, examples, memory entries) a tool returns."""


@dataclass
class ToolEnv:
    """What a role's tools may read during one decision. Unset fields are not this decision's inputs."""

    role: str
    task: BenchmarkTask | None = None
    memory: ExperimentMemory | None = None
    evidence: Evidence | None = None
    affordable_rows: int | None = None
    plan: IterationPlan | None = None
    selection: DataSelection | None = None
    last_verdict: ValidationVerdict | None = None
    findings: ValidationFindings | None = None
    manifest: DatasetManifest | None = None
    report: EvalReport | None = None
    best_before: Best | None = None
    failure: str | None = None

    def need(self, name: str) -> Any:
        value = getattr(self, name)
        if value is None:
            raise ToolError(f"{name.replace('_', ' ')} is not available to the {self.role} in this decision")
        return value


def _env(runtime: ToolRuntime[Any]) -> ToolEnv:
    # ToolRuntime[Any] in the signatures: with ToolRuntime[ToolEnv], pydantic would build a schema of ToolEnv.
    return runtime.context


def _clip(text: str, n: int = MAX_TEXT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=False, default=str)


# ---------------------------------------------------------------------------------------------------------------
# Planner


@tool(parse_docstring=True)
def search_memory(query: str, runtime: ToolRuntime[Any], k: int = 5) -> str:
    """Search the experiment memory (past log entries, failure modes, plans and verdicts) by meaning.

    Args:
        query: What to look for, in plain words, e.g. "answer format failures after SFT".
        k: How many entries to return (1 to 10).
    """
    env = _env(runtime)
    memory, task = env.need("memory"), env.need("task")
    if not 1 <= k <= 10:
        raise ToolError("k must be between 1 and 10")
    hits = memory.search(query, k=k, where={"task": task.name})
    if not hits:
        return "no entries match"
    return "\n".join(f"- {h.id} ({h.kind}, distance {h.distance:.2f}): {_clip(h.text, 300)}" for h in hits)


@tool(parse_docstring=True)
def read_last_eval(runtime: ToolRuntime[Any]) -> str:
    """Read the latest valid evaluation (the baseline before any iteration): accuracy, sample count and the
    observed failure modes with one example each."""
    ev = _env(runtime).need("evidence")
    report = ev.last_eval or ev.baseline
    which = "last iteration" if ev.last_eval else "baseline (base model)"
    modes = [{"label": m.label, "category": m.category, "count": m.count,
              "example": _clip(m.examples[0], 300) if m.examples else ""} for m in report.failure_modes]
    return _json({"evaluation": which, "accuracy": report.accuracy, "stderr": report.stderr, "n": report.n,
                  "canonical": report.canonical, "failure_modes": modes, "runtime_s": report.runtime_s})


@tool(parse_docstring=True)
def read_history(runtime: ToolRuntime[Any]) -> str:
    """Read every finished iteration of this run: objective, rows, score, delta vs the base model, kept or not."""
    ev = _env(runtime).need("evidence")
    if not ev.history:
        return "no iteration has finished yet"
    return _json([r.model_dump(mode="json") for r in ev.history])


@tool(parse_docstring=True)
def estimate_budget(runtime: ToolRuntime[Any]) -> str:
    """Estimate what the remaining time budget affords: seconds left and the most training rows one iteration
    can use (from the last measured training speed, else a default for the device)."""
    env = _env(runtime)
    ev = env.need("evidence")
    return _json({"budget_left_s": round(ev.budget_left_s), "on_gpu": ev.on_gpu,
                  "max_affordable_rows": env.need("affordable_rows"),
                  "last_train_runtime_s": ev.last_train.runtime_s if ev.last_train else None})


# ---------------------------------------------------------------------------------------------------------------
# Data


@tool(parse_docstring=True)
def read_plan(runtime: ToolRuntime[Any]) -> str:
    """Read this iteration's plan: problems, objective, planned changes and the data and training knobs."""
    return _env(runtime).need("plan").model_dump_json(indent=1)


@tool(parse_docstring=True)
def read_last_verdict(runtime: ToolRuntime[Any]) -> str:
    """Read the validation verdict that sent the data back in this iteration, if any: decision, reasons,
    failed checks and contaminated test ids."""
    verdict = _env(runtime).last_verdict
    if verdict is None:
        return "no verdict yet: this is the first attempt of this iteration"
    return _json({"decision": verdict.decision, "reasons": verdict.reasons,
                  "failed_checks": [f"{c.name}: {c.detail}" for c in verdict.checks if not c.passed],
                  "contaminated_ids": verdict.contaminated_ids})


@tool(parse_docstring=True)
def list_sources(runtime: ToolRuntime[Any]) -> str:
    """List the kinds of training data source, the benchmark's own training source with its row count, and the
    benchmark's construction options."""
    task = _env(runtime).need("task")
    return _json(
        {
            "benchmark_train": f"{task.train_source} ({len(task.training_rows())} rows, never the test set)",
            "local:<path.jsonl>": "a local JSONL file with the benchmark's raw fields",
            "hub:<dataset>": "a hub dataset's train split (needs the hub)",
            "refused": "remote model APIs (http(s)://, openai:, api:) may never build training data",
            "construction_options": {
                k: {"default": d, "meaning": doc} for k, (d, doc) in task.construction_options.items()
            },
        }
    )


@tool(parse_docstring=True)
def inspect_source(name: str, runtime: ToolRuntime[Any], n: int = 3) -> str:
    """Load a data source and show its size, its fields and its first rows.

    Args:
        name: The source: benchmark_train, local:<path.jsonl> or hub:<dataset>.
        n: How many rows to show (1 to 5).
    """
    from tools.data import load_source

    task = _env(runtime).need("task")
    if not 1 <= n <= 5:
        raise ToolError("n must be between 1 and 5")
    try:
        rows = load_source(task, name)
    except SourceError as e:
        raise ToolError(str(e)) from None
    fields = sorted({k for r in rows[:50] for k in r})
    return _json(
        {
            "source": name,
            "rows": len(rows),
            "fields": fields,
            "first_rows": [{k: _clip(v, 300) for k, v in r.items()} for r in rows[:n]],
        }
    )


@tool(parse_docstring=True)
def preview_rendered_sample(
    runtime: ToolRuntime[Any],
    index: int = 0,
    with_system: bool = False,
    rewrite_answers: bool = True,
    options: dict[str, bool] | None = None,
) -> str:
    """Render one row of the benchmark's training source as a training example with the given construction knobs,
    beside the prompt the evaluation itself renders for the same input, to check the format matches.

    Args:
        index: Which row (0-based).
        with_system: Prepend the evaluation's system message (e.g. its few-shot block) to the prompt.
        rewrite_answers: Rewrite the answer into the evaluation's answer format.
        options: The benchmark's own construction switches by name (list_sources shows them); unset ones take
            their defaults.
    """
    from core.handoffs import DataKnobs

    task = _env(runtime).need("task")
    rows = task.training_rows()
    if not 0 <= index < len(rows):
        raise ToolError(f"index must be between 0 and {len(rows) - 1}")
    unknown = sorted(set(options or {}) - set(task.construction_options))
    if unknown:
        raise ToolError(
            f"unknown option(s) {', '.join(unknown)}; this benchmark has "
            f"{', '.join(task.construction_options) or 'none'}"
        )
    if not task.row_ok(rows[index]):
        raise ToolError(f"row {index} has no usable input and reference; try another index")
    knobs = DataKnobs(with_system=with_system, rewrite_answers=rewrite_answers, options=options or {})
    ex = task.training_example(rows[index], knobs)
    evaluation = task.prompt_messages(ex.input_text)
    return _json(
        {
            "training_messages": [{"role": m["role"], "content": _clip(m["content"], 400)} for m in ex.messages],
            "training_response": _clip(ex.response, 500),
            "response_has_answer_line": task.answer_ok(ex.response),
            "evaluation_messages": [{"role": m["role"], "content": _clip(m["content"], 400)} for m in evaluation],
            "answer_format": task.answer_line_hint,
        }
    )


@tool(parse_docstring=True)
def read_findings(runtime: ToolRuntime[Any]) -> str:
    """Read the measured validation findings: each check (structure, alignment, content, decontamination) with
    pass or FAIL and its detail, the usable row count and the contaminated rows."""
    findings = _env(runtime).need("findings")
    hit_ids = sorted({t for ids in findings.contaminated.values() for t in ids})
    return _json(
        {
            "checks": [{"name": c.name, "passed": c.passed, "detail": _clip(c.detail, 400)} for c in findings.checks],
            "usable_rows": findings.usable_rows,
            "contaminated_rows": len(findings.contaminated),
            "contaminated_test_ids": hit_ids[:50],
        }
    )


@tool(parse_docstring=True)
def read_validation_report(runtime: ToolRuntime[Any], max_chars: int = 4000) -> str:
    """Read the validation report, including training samples shown beside evaluation prompts.

    Args:
        max_chars: How much of the report to return (500 to 12000 characters).
    """
    findings = _env(runtime).need("findings")
    if not 500 <= max_chars <= 12000:
        raise ToolError("max_chars must be between 500 and 12000")
    return findings.report_md[:max_chars] or "the report is empty"


@tool(parse_docstring=True)
def read_manifest(runtime: ToolRuntime[Any]) -> str:
    """Read the dataset manifest: rows, sources, each construction operation with the rows left after it."""
    m = _env(runtime).need("manifest")
    return _json(
        {
            "rows": m.rows,
            "sources": m.sources,
            "with_system": m.with_system,
            "attempt": m.attempt,
            "operations": [f"{o.op}: {o.rows_after}" for o in m.operations],
        }
    )


# ---------------------------------------------------------------------------------------------------------------
# Trainer


@tool(parse_docstring=True)
def training_bounds(runtime: ToolRuntime[Any]) -> str:
    """Read the allowed range of every training knob and the knobs the plan asks for."""
    from core.handoffs import TrainKnobs

    plan = _env(runtime).need("plan")
    bounds = {}
    for name, spec in TrainKnobs.model_json_schema()["properties"].items():
        bounds[name] = {k: v for k, v in spec.items() if k in ("enum", "minimum", "maximum", "exclusiveMinimum")}
    bounds["cutoff_len"]["minimum"] = plan.train.cutoff_len  # the data was built to fit this many tokens
    return _json({"bounds": bounds, "planned": plan.train.model_dump(mode="json")})


@tool(parse_docstring=True)
def propose_knobs(
    runtime: ToolRuntime[Any],
    learning_rate: float,
    epochs: float,
    batch_size: int,
    cutoff_len: int,
    start_from: Literal["base", "best"] = "base",
    finetuning_type: Literal["full", "lora"] = "full",
) -> str:
    """Check a set of training knobs against the bounds and this iteration's data, without handing off.

    Args:
        learning_rate: Peak learning rate.
        epochs: Passes over the training data.
        batch_size: Rows per device step.
        cutoff_len: Longest training sequence in tokens.
        start_from: Start from the base model or from the best checkpoint so far.
        finetuning_type: Full fine-tuning or LoRA.
    """
    from pydantic import ValidationError

    from core.handoffs import TrainKnobs
    from roles import rules

    plan = _env(runtime).need("plan")
    try:
        knobs = TrainKnobs(
            learning_rate=learning_rate,
            epochs=epochs,
            batch_size=batch_size,
            cutoff_len=cutoff_len,
            start_from=start_from,
            finetuning_type=finetuning_type,
        )
    except ValidationError as e:
        raise ToolError(
            "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors(include_url=False))
        ) from None
    problems = rules.train_problems(knobs, plan)
    return "problems: " + "; ".join(problems) if problems else "valid: these knobs can be handed off"


# ---------------------------------------------------------------------------------------------------------------
# Logger


@tool(parse_docstring=True)
def read_eval_result(runtime: ToolRuntime[Any]) -> str:
    """Read this iteration's outcome: the evaluation against the best score before it, or why it failed."""
    env = _env(runtime)
    best = env.need("best_before")
    if env.report is None:
        return _json({"status": "failed", "failure": env.failure or "unknown", "best_before": best.score})
    r = env.report
    return _json(
        {
            "status": "completed",
            "accuracy": r.accuracy,
            "stderr": r.stderr,
            "n": r.n,
            "best_before": best.score,
            "delta": round(r.accuracy - best.score, 4),
            "failure_modes": [{"label": m.label, "category": m.category, "count": m.count} for m in r.failure_modes],
        }
    )


PLANNER_TOOLS = [search_memory, read_last_eval, read_history, estimate_budget]
SELECTION_TOOLS = [read_plan, read_last_verdict, list_sources, inspect_source]
CONSTRUCTION_TOOLS = [read_plan, read_last_verdict, inspect_source, preview_rendered_sample]
VALIDATION_TOOLS = [read_findings, read_validation_report, read_manifest]
TRAINER_TOOLS = [read_plan, read_manifest, training_bounds, propose_knobs]
LOGGER_TOOLS = [read_plan, read_eval_result, search_memory]

TOOLS = {
    "planner": PLANNER_TOOLS,
    "data_selection": SELECTION_TOOLS,
    "data_construction": CONSTRUCTION_TOOLS,
    "data_validation": VALIDATION_TOOLS,
    "trainer": TRAINER_TOOLS,
    "logger": LOGGER_TOOLS,
}
"""Each deciding role's tools, by role name."""
