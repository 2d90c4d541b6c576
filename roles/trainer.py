"""The trainer: LlamaFactory only. A short validation run first, then the full run, then the export."""

from __future__ import annotations

import shutil
from pathlib import Path

from core.errors import TrainingFailed
from core.handoffs import TrainResult
from core.state import RunState
from roles import rules
from roles.context import RunContext
from tools.export import export_model
from tools.guards import check_start_checkpoint, write_lineage
from tools.llamafactory import TrainConfig, check_config, run_training, validation_run


def _every_tenth(say):
    """Pass on step lines only at each tenth of the run (and every loss-free line), so long runs stay readable."""
    last = [-1]

    def filtered(line: str) -> None:
        import re

        m = re.match(r"step (\d+)/(\d+)", line)
        if m:
            done, total = int(m[1]), int(m[2])
            tenth = done * 10 // max(total, 1)
            if tenth == last[0] and done != total:
                return
            last[0] = tenth
        say(line)

    return filtered


def node(state: RunState, ctx: RunContext) -> dict:
    plan, manifest, best = state["plan"], state["manifest"], state["best"]
    knobs = ctx.policy("trainer").train_knobs(plan, manifest)
    rules.enforce("trainer", rules.train_problems(knobs, plan))
    start = best.model_dir if knobs.start_from == "best" and best.iteration > 0 else ctx.base_model
    lineage = check_start_checkpoint(start, ctx.base_model, ctx.ws)
    paths = ctx.ws.iteration(state["iteration"])
    train_dir = paths.train
    train_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.for_device(
        on_gpu=ctx.on_gpu, model_name_or_path=start, finetuning_type=knobs.finetuning_type,
        dataset=manifest.dataset_name, dataset_dir=manifest.dataset_dir, cutoff_len=knobs.cutoff_len,
        per_device_train_batch_size=knobs.batch_size, learning_rate=knobs.learning_rate,
        num_train_epochs=knobs.epochs, output_dir=str(train_dir / "output"), seed=ctx.settings.seed,
        logging_steps=5)
    check_config(cfg)
    try:
        ctx.progress(f"validation run from {Path(start).name} ({manifest.rows} rows)")
        check = validation_run(cfg, train_dir, ctx.progress)
        ctx.progress(f"full run: lr {knobs.learning_rate:g}, {knobs.epochs:g} epoch(s), batch {knobs.batch_size}")
        run = run_training(cfg, train_dir, _every_tenth(ctx.progress))
    except TrainingFailed as e:
        # A failed run is evidence for the log and the next plan; the log file keeps the whole story.
        ctx.progress(f"training failed: {e.summary}")
        tail = " | ".join(line.strip() for line in e.log_tail[-3:])
        return {"failure": f"training failed: {e.summary}; last lines: {tail} (log: {e.log_path})"}
    model_dir = paths.model
    export_model(Path(cfg.output_dir), model_dir, base_model=start)
    write_lineage(model_dir, lineage)
    shutil.rmtree(cfg.output_dir)  # the export holds the weights; keep one copy per iteration
    result = TrainResult(
        model_dir=str(model_dir), start_checkpoint=start, lineage=lineage,
        config_path=str(train_dir / "llamafactory.yaml"), command=(train_dir / "command.txt").read_text().strip(),
        log_path=str(run.log_path), train_loss=run.train_loss, runtime_s=round(run.runtime_s, 1),
        steps=run.steps or 0, validation_run=f"{check.steps} steps, loss {check.train_loss}", knobs=knobs,
        rows=manifest.rows)
    ctx.progress(f"trained: loss {run.train_loss}, {run.steps} steps in {run.runtime_s:.0f}s")
    return {"train_result": result, "last_train": result}
