"""`python -m graph.run --task gsm8k`: start, or resume, an autonomous post-training run."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EXIT_INPUT, EXIT_GUARD, EXIT_HANDOFF = 2, 3, 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m graph.run", description=__doc__)
    p.add_argument("--task", help="benchmark to post-train for (default gsm8k)")
    p.add_argument("--data-dir", type=Path, help="folder with <task>/{train,test}.jsonl; default: the hub")
    p.add_argument("--base-model", help="HF id or local folder; default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--workspace", type=Path, help="run folder (default runs/<task>-<time>)")
    p.add_argument("--resume", type=Path, metavar="WORKSPACE", help="continue the run in WORKSPACE")
    p.add_argument("--hours", type=float, help="budget of work, in hours (default 0.75)")
    p.add_argument("--max-iterations", type=int, help="iteration cap (default 2)")
    p.add_argument("--target", type=float, help="stop once the development accuracy reaches this (0-1)")
    p.add_argument("--backbone", help="backbone for every role (default playbook)")
    p.add_argument("--role-backbone", action="append", default=[], metavar="ROLE=SPEC",
                   help="per-role backbone override; repeatable")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--eval-limit", type=int, help="development evaluation size (default: the sample floor)")
    p.add_argument("--eval-provider", choices=["auto", "prefixcache", "hf", "vllm"])
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--final-eval", choices=["auto", "full", "none"])
    p.add_argument("--memory-dir", type=Path, help="experiment memory shared between runs")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="settings from a TOML or YAML file (same names as the options, e.g. role_backbones); "
                        "options given on the command line win")
    p.add_argument("--trace", type=Path, metavar="DIR",
                   help="also write the run's traces to DIR/runs.jsonl (offline; view: python -m graph.tracing view DIR)")
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace):
    from graph.settings import RunSettings
    from tasks.base import InputError

    if args.resume:
        if not (args.resume / "run_settings.json").is_file():
            raise InputError(f"nothing to resume in {args.resume}: no run_settings.json")
        return RunSettings.load(args.resume)
    overrides = {}
    for item in args.role_backbone:
        role, sep, spec = item.partition("=")
        if not sep or not spec:
            raise InputError(f"--role-backbone expects ROLE=SPEC, got {item!r}")
        overrides[role] = spec
    from_file = _config_file(args.config) if args.config else {}
    task = args.task or from_file.get("task", "gsm8k")
    workspace = args.workspace or Path(from_file.get("workspace") or
                                       Path("runs") / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (workspace / "run_settings.json").exists():
        raise InputError(f"{workspace} already holds a run; continue it with --resume {workspace}")
    fields = dict(task=task, data_dir=args.data_dir.resolve() if args.data_dir else None,
                  base_model=args.base_model, workspace=workspace.resolve(), hours=args.hours,
                  max_iterations=args.max_iterations, target=args.target, backbone=args.backbone,
                  role_backbones=overrides, device=args.device, eval_limit=args.eval_limit,
                  eval_provider=args.eval_provider, eval_batch_size=args.eval_batch_size, final_eval=args.final_eval,
                  memory_dir=args.memory_dir.resolve() if args.memory_dir else None, seed=args.seed)
    from pydantic import ValidationError

    try:
        given = {k: v for k, v in fields.items() if v is not None and v != {}}
        if "role_backbones" in from_file and "role_backbones" in given:
            given["role_backbones"] = {**from_file["role_backbones"], **given["role_backbones"]}
        return RunSettings(**{**from_file, **given})
    except ValidationError as e:
        first = e.errors()[0]
        raise InputError(f"--{'-'.join(map(str, first['loc'][:1])).replace('_', '-')}: {first['msg']}") from None


def _config_file(path: Path) -> dict:
    from tasks.base import InputError

    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001  any parse error is bad input, reported in one line
        raise InputError(f"cannot parse {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a mapping of settings")
    return data


def build_context(settings, stream=sys.stdout):
    from graph.context import Progress, RunContext
    from graph.workspace import Workspace
    from roles.backbones import check_specs, policies_for
    from tasks import get_task
    from tasks.base import InputError
    from tools.model import resolve_base_model

    if settings.data_dir is not None and not settings.data_dir.is_dir():
        raise InputError(f"data dir not found: {settings.data_dir}")
    task = get_task(settings.task, settings.data_dir)
    task.load_rows("train"), task.load_rows("test")  # malformed data fails now, with file and line
    if settings.eval_limit is not None:
        from tools.evaluate import check_limit

        check_limit(settings.eval_limit, task.benchmark_size())
    progress = Progress(budget_s=settings.hours * 3600, stream=stream)
    progress("preparing the base model" + ("" if settings.base_model else " (embedded SmolLM2-135M-Instruct)"))
    base = resolve_base_model(settings.base_model)
    on_gpu = _on_gpu(settings.device)
    check_specs(settings)
    # Saved before the backbones are reached: a backbone that does not answer leaves a run that --resume takes up.
    settings.save()
    policies = policies_for(settings)
    from memory.store import ExperimentMemory  # after the input checks: chromadb takes seconds to import

    ctx = RunContext(settings=settings, task=task, ws=Workspace(settings.workspace), base_model=base, on_gpu=on_gpu,
                     memory=ExperimentMemory(settings.memory_path), policies=policies, progress=progress)
    from roles.agent import attach

    attach(policies, ctx)  # agent tools read the run's task, evidence and memory
    return ctx


def _on_gpu(device: str) -> bool:
    if device == "cpu":
        return False
    import torch  # respects CUDA_VISIBLE_DEVICES: only the devices it names are visible

    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        from tasks.base import InputError

        raise InputError("--device cuda, but no CUDA device is visible (check CUDA_VISIBLE_DEVICES)")
    return available


def execute(settings, *, resume: bool, stream=sys.stdout, trace_dir: Path | None = None) -> dict:
    """Run (or continue) the graph to its end; returns the final state values."""
    ctx = build_context(settings, stream)  # bad input fails here, before the heavy imports below
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    from graph.build import builder, checkpoint_serde
    from graph.tracing import flush_traces, tracing_config

    conn = sqlite3.connect(ctx.ws.checkpoint_db, check_same_thread=False)
    try:
        graph = builder().compile(checkpointer=SqliteSaver(conn, serde=checkpoint_serde()))
        config = {"configurable": {"thread_id": "run"}, "recursion_limit": 100_000,
                  **tracing_config(settings, trace_dir)}
        snapshot = graph.get_state(config)
        if resume and snapshot.values and not snapshot.next:
            ctx.progress("this run already finished; nothing to resume")
            return snapshot.values
        try:
            graph.invoke(None if resume and snapshot.values else {"stage": 0}, config, context=ctx)
        finally:
            flush_traces(config)  # a crashed run still delivers what it traced
        return graph.get_state(config).values
    finally:
        conn.close()


def summary_table(state: dict) -> str:
    base = state.get("baseline")
    lines = [f"{'iteration':>9}  {'score':>7}  {'delta':>7}  kept  status",
             f"{'base':>9}  {base.accuracy:>7.3f}  {'':>7}  -     baseline" if base else ""]
    for r in state.get("history", []):
        score = f"{r.score:.3f}" if r.score is not None else "-"
        delta = f"{r.delta_vs_base:+.3f}" if r.delta_vs_base is not None else "-"
        lines.append(f"{r.iteration:>9}  {score:>7}  {delta:>7}  {'yes' if r.kept else 'no ':<4}  {r.status}")
    final = state.get("final_eval")
    if final:
        lines.append(f"final_model/ on the full benchmark: {final.accuracy:.3f} ± {final.stderr:.3f} (n={final.n})")
    if base and not base.canonical:
        lines.append(f"note: CPU profile (max_tokens {base.max_tokens}): scores are not canonical PostTrainBench scores")
    return "\n".join(x for x in lines if x)


def _resume_hint(settings, when: str = "") -> str:
    return f"the state is saved; {when}continue with python -m graph.run --resume {settings.workspace}"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")  # llamafactory pins datasets<=4.0.0; see requirements.in
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    from roles.agent import HandoffFailed
    from roles.llm import BackboneError
    from tasks.base import InputError
    from tools.evaluate import EvalRefused
    from tools.guards import GuardViolation

    try:
        settings = settings_from_args(args)
        state = execute(settings, resume=args.resume is not None,
                        trace_dir=args.trace.resolve() if args.trace else None)
    except (InputError, EvalRefused) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except BackboneError as e:  # raised only after the settings are saved: the run so far can be resumed
        print(f"error: {e}\n{_resume_hint(settings, 'once the backbone answers, ')}", file=sys.stderr)
        return EXIT_INPUT
    except HandoffFailed as e:
        print(f"stopped: the {e.role} gave no valid handoff ({e.reason})\n{_resume_hint(settings)}", file=sys.stderr)
        return EXIT_HANDOFF
    except GuardViolation as e:
        print(f"stopped by a hard rule: {e}\n{_resume_hint(settings, 'after fixing it, ')}", file=sys.stderr)
        return EXIT_GUARD
    print(f"\nstopped: {state.get('stop_reason', 'unknown')}")
    print(summary_table(state))
    print(f"workspace: {settings.workspace}  (log: {settings.workspace / 'task' / 'experiment_log.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
