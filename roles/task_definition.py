"""Stage 0: write down the target, the evaluation method and the limits before anything is trained."""

from __future__ import annotations

from graph.context import RunContext
from graph.state import Stage
from tools.evaluate import choose_provider
from tools.guards import record_eval_checksums


def node(state: dict, ctx: RunContext) -> dict:
    task, s = ctx.task, ctx.settings
    gen = task.generation(ctx.on_gpu)
    floor = task.sample_floor()
    limit = s.eval_limit or floor
    sums = record_eval_checksums(ctx.ws, choose_provider(s.eval_provider, ctx.on_gpu))
    text = f"""# Task definition (stage 0)

- Benchmark: {task.name}: {task.description}
- Base model: {ctx.base_model}
- Target: {s.target if s.target is not None else "none given: improve until the budget or iteration cap"}
- Evaluation: the benchmark's canonical inspect-ai task; {task.benchmark_size()} test samples; development
  comparisons on the first {limit} (floor max(32, ceil(5%)) = {floor}).
- Answer format: {task.answer_line_hint}
- Generation (fixed by the task, never by an agent): max_tokens {gen.max_tokens}, {'greedy decoding' if gen.greedy else 'provider sampling defaults'}
  {"" if gen.canonical else "(CPU profile: max_tokens below the benchmark's 4000, so scores are NOT canonical)"}
- Hardware: {"GPU" if ctx.on_gpu else "CPU only"}; budget {s.hours:g} h of work; at most {s.max_iterations} iterations
- Backbones: {", ".join(f"{r}={s.backbone_for(r)}" for r in ctx.policies)}
- Evaluation code checksummed: {len(sums)} files (see eval_checksums.json)
"""
    ctx.ws.task_dir.mkdir(parents=True, exist_ok=True)
    (ctx.ws.task_dir / "task_definition.md").write_text(text)
    ctx.progress(f"task defined: {task.name}, floor {floor}, max_tokens {gen.max_tokens}")
    return {"stage": Stage.BASELINE, "iteration": 0, "history": []}
