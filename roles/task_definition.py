"""Stage 0: write down the target, the evaluation method and the limits before anything is trained."""

from __future__ import annotations

from core.handoffs import Stage
from core.state import RunState
from roles.context import RunContext
from tools.evaluate import choose_provider
from tools.guards import record_eval_checksums


def node(state: RunState, ctx: RunContext) -> dict:
    task, s = ctx.task, ctx.settings
    gen = task.generation(ctx.on_gpu)
    floor = task.sample_floor()
    limit = s.eval_limit or floor
    sums = record_eval_checksums(ctx.ws, choose_provider(s.eval_provider, ctx.on_gpu), task.eval_modules)
    decoding = "greedy decoding" if gen.greedy else "provider sampling defaults"
    profile = "" if gen.canonical else (f"(CPU profile: max_tokens below the benchmark's {task.max_tokens.canonical}, "
                                        "so scores are NOT canonical)")
    text = f"""# Task definition (stage 0)

- Benchmark: {task.name}: {task.description}
- Base model: {ctx.base_model}
- Target: {s.target if s.target is not None else "none given: improve until the budget or iteration cap"}
- Evaluation: the benchmark's canonical inspect-ai task; {task.benchmark_size()} test samples; development
  comparisons on the first {limit} (floor max(32, ceil(5%)) = {floor}).
- Score: {task.metric}; answer format: {task.answer_line_hint}
- Training source (benchmark_train): {task.train_source}
- Generation (fixed by the task, never by an agent): max_tokens {gen.max_tokens}, {decoding}
  {profile}
- Hardware: {"GPU" if ctx.on_gpu else "CPU only"}; budget {s.hours:g} h of work; at most {s.max_iterations} iterations
- Backbones: {", ".join(f"{r}={s.backbone_for(r)}" for r in ctx.policies)}
- Evaluation code checksummed: {len(sums)} files (see eval_checksums.json)
"""
    ctx.ws.task_dir.mkdir(parents=True, exist_ok=True)
    ctx.ws.task_definition.write_text(text)
    ctx.progress(f"task defined: {task.name}, floor {floor}, max_tokens {gen.max_tokens}")
    return {"stage": Stage.BASELINE, "iteration": 0, "history": []}
