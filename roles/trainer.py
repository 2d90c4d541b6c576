"""The trainer: LlamaFactory only. A short validation run first, then the full run, then the export."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from core.errors import TrainingFailed
from core.handoffs import DatasetManifest, TrainResult
from core.state import RunState
from roles import rules
from roles.context import RunContext
from tools.export import export_model
from tools.guards import check_start_checkpoint, write_lineage
from tools.llamafactory import TrainConfig, check_config, is_out_of_memory, run_training, validation_run
from tools.parallel import Recipe, Shape, choose_recipe, next_recipe


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


def train_stage(manifest: DatasetManifest) -> Literal["sft", "dpo"]:
    """The LlamaFactory stage the built dataset needs: preference pairs (a DPO plan) train with stage dpo; sft and
    self_distill rows (the model's own right answers) with sft. LlamaFactory refuses a pairwise dataset in any
    other stage, and a plain one in dpo."""
    return "dpo" if manifest.pairwise else "sft"


def node(state: RunState, ctx: RunContext) -> dict:
    plan, manifest, best = state["plan"], state["manifest"], state["best"]
    knobs = ctx.policy("trainer").train_knobs(plan, manifest)
    rules.enforce("trainer", rules.train_problems(knobs, plan))
    start = best.model_dir if knobs.start_from == "best" and best.iteration > 0 else ctx.base_model
    lineage = check_start_checkpoint(start, ctx.base_model, ctx.ws)
    paths = ctx.ws.iteration(state["iteration"])
    train_dir = paths.train
    train_dir.mkdir(parents=True, exist_ok=True)
    stage = train_stage(manifest)
    cfg = TrainConfig.for_device(
        on_gpu=ctx.on_gpu, model_name_or_path=start, stage=stage, finetuning_type=knobs.finetuning_type,
        dataset=manifest.dataset_name, dataset_dir=manifest.dataset_dir, cutoff_len=knobs.cutoff_len,
        per_device_train_batch_size=knobs.batch_size, learning_rate=knobs.learning_rate,
        num_train_epochs=knobs.epochs, output_dir=str(train_dir / "output"), seed=ctx.settings.seed,
        logging_steps=5)
    recipe, env = None, {}
    if ctx.on_gpu:
        recipe, env, cfg = _gpu_recipe(ctx, start, knobs, cfg, manifest.pairwise)
    check_config(cfg)
    try:
        ctx.progress(f"validation run ({stage}) from {Path(start).name} ({manifest.rows} rows)")
        while True:  # an out-of-memory in the validation run steps the recipe down, not the iteration
            try:
                check = validation_run(cfg, train_dir, ctx.progress, env=env)
                break
            except TrainingFailed as e:
                recipe = _step_down(ctx, start, knobs, recipe, e, manifest.pairwise)
                if recipe is None:
                    raise
                cfg = _apply(cfg, recipe)
        ctx.progress(f"full run ({stage}): lr {knobs.learning_rate:g}, {knobs.epochs:g} epoch(s), "
                     f"batch {knobs.batch_size}")
        run = run_training(cfg, train_dir, _every_tenth(ctx.progress), env=env)
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
        rows=manifest.rows, recipe=recipe.why if recipe else "")
    ctx.progress(f"trained: loss {run.train_loss}, {run.steps} steps in {run.runtime_s:.0f}s")
    return {"train_result": result, "last_train": result}


def _gpus() -> tuple[int, float]:
    """The visible GPUs (CUDA_VISIBLE_DEVICES decides which) and the smallest one's memory in GiB."""
    import torch

    count = torch.cuda.device_count()
    return count, min(torch.cuda.get_device_properties(i).total_memory for i in range(count)) / (1 << 30)


def _gpu_recipe(ctx: RunContext, start: str, knobs, cfg: TrainConfig, pairwise: bool):
    """The recipe the memory estimate picks for this model and these GPUs, said in the progress and the log."""
    gpus, gib = _gpus()
    recipe = choose_recipe(Shape.from_model(start), batch=knobs.batch_size, cutoff=knobs.cutoff_len, gpus=gpus,
                           gpu_gib=gib, method=knobs.finetuning_type, pairwise=pairwise)
    ctx.progress(f"recipe: {recipe.why}")
    # Several GPUs: LlamaFactory launches torchrun itself (NNODES, NODE_RANK, MASTER_ADDR pass through untouched).
    return recipe, ({"FORCE_TORCHRUN": "1"} if gpus > 1 else {}), _apply(cfg, recipe)


def _apply(cfg: TrainConfig, recipe: Recipe) -> TrainConfig:
    return TrainConfig.model_validate({**cfg.model_dump(), "per_device_train_batch_size": recipe.micro_batch,
                                       "gradient_accumulation_steps": recipe.grad_accum,
                                       "finetuning_type": recipe.method,
                                       "deepspeed": str(recipe.deepspeed) if recipe.deepspeed else None})


def _step_down(ctx: RunContext, start: str, knobs, recipe: Recipe | None, error: TrainingFailed,
               pairwise: bool) -> Recipe | None:
    if recipe is None or not is_out_of_memory(error):
        return None
    gpus, gib = _gpus()
    smaller = next_recipe(Shape.from_model(start), recipe, batch=knobs.batch_size, cutoff=knobs.cutoff_len,
                          gpus=gpus, gpu_gib=gib, method=knobs.finetuning_type, pairwise=pairwise)
    if smaller is not None:
        ctx.progress(f"out of memory in the validation run; stepping down: {smaller.why}")
    return smaller
