"""`python -m graph.sweep --tasks T1,T2 --base-models A,B`: every (task, base model) pair as an ordinary,
resumable run, on an existing engine, and one summary of them all.

- `--engine local` runs the pairs one after another here (the default without the `cluster` extra);
- `--engine ray` puts each run in a Ray task that asks for its GPUs (a local Ray instance, or `--ray-address`);
- `--engine slurm` submits each run with submitit (`--slurm-partition`, `--gpus-per-run`, the time limit from
  `--hours`; `--slurm-local` runs the jobs through submitit's local executor instead of a cluster).

Re-running the same sweep skips the runs that finished and resumes the ones that did not: a killed sweep loses
nothing. The summary (`sweep_summary.md`, `.json`, `sweep_scores.png`) gives each pair's base and final scores with
their interval and whether they are canonical, and each model's weighted average with PostTrainBench v1.2's weights
(the benchmarks' own `ptb_weight`; those without one apart).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import EXIT_OK, InputError, PosttrainError
from graph.run import _Parser, _path

SUMMARY = "sweep_summary"


@dataclass(frozen=True)
class Pair:
    task: str
    model: str

    @property
    def name(self) -> str:
        return f"{self.task}--{re.sub(r'[^A-Za-z0-9._-]+', '_', self.model)}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(prog="python -m graph.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", required=True, help="comma-separated benchmarks")
    p.add_argument("--base-models", required=True, help="comma-separated HF ids or folders ('base': the embedded one)")
    p.add_argument("--sweep-dir", type=_path, default=Path("runs/sweep"), help="one workspace per pair in here")
    p.add_argument("--engine", choices=["local", "ray", "slurm"], default=None,
                   help="default: ray when it is installed, else local")
    p.add_argument("--ray-address", help="an existing Ray cluster (default: a local instance)")
    p.add_argument("--slurm-partition")
    p.add_argument("--slurm-local", action="store_true", help="submitit's local executor instead of a cluster")
    p.add_argument("--gpus-per-run", type=int, default=1)
    p.add_argument("--hours", type=float, help="each run's budget (and, +30 min, its Slurm time limit)")
    p.add_argument("--run-args", default="", help="more graph.run options for every run, e.g. '--max-iterations 1'")
    p.add_argument("--data-dir", type=_path)
    p.add_argument("--backbone")
    p.add_argument("--judge")
    return p.parse_args(argv)


def pairs(args: argparse.Namespace) -> list[Pair]:
    tasks = [t for t in args.tasks.split(",") if t]
    models = [m for m in args.base_models.split(",") if m]
    if not tasks or not models:
        raise InputError("--tasks and --base-models each need at least one name")
    from tasks import task_class

    for t in tasks:
        task_class(t)  # an unknown name fails now, in one line
    return [Pair(t, m) for t in tasks for m in models]


def command(args: argparse.Namespace, pair: Pair) -> list[str] | None:
    """The graph.run command for a pair: a new run, a resume, or None when its run already finished."""
    from graph.checkpoints import read_state

    ws = args.sweep_dir.resolve() / pair.name
    run = [sys.executable, "-m", "graph.run"]
    if (ws / "run_settings.json").is_file():
        values, _ = read_state(ws / "checkpoints.sqlite")
        return None if values.get("stop_reason") else [*run, "--resume", str(ws)]
    cmd = [*run, "--task", pair.task, "--workspace", str(ws)]
    cmd += [] if pair.model == "base" else ["--base-model", pair.model]
    for flag in ("data_dir", "backbone", "judge", "hours"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return cmd + args.run_args.split()


def run_one(cmd: list[str], log: str) -> int:
    """One run, its output in `log` (the engines call this wherever they run it)."""
    with open(log, "a") as out:
        return subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)


def execute(args: argparse.Namespace, say=print) -> dict[str, int]:
    """Run every pair that has not finished on the chosen engine; returns each pair's exit code (0 for skipped)."""
    todo, codes = [], {}
    args.sweep_dir.mkdir(parents=True, exist_ok=True)
    for pair in pairs(args):
        cmd = command(args, pair)
        if cmd is None:
            say(f"{pair.name}: finished before, skipped")
            codes[pair.name] = 0
        else:
            say(f"{pair.name}: {'resuming' if '--resume' in cmd else 'starting'}")
            todo.append((pair, cmd, str(args.sweep_dir.resolve() / f"{pair.name}.log")))
    engine = args.engine or ("ray" if _has("ray") else "local")
    if engine == "local":
        for pair, cmd, log in todo:
            codes[pair.name] = run_one(cmd, log)
            say(f"{pair.name}: exit {codes[pair.name]}")
    elif engine == "ray":
        codes |= _on_ray(args, todo)
    else:
        codes |= _on_slurm(args, todo)
    return codes


def _has(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


def _on_ray(args: argparse.Namespace, todo: list) -> dict[str, int]:
    if not _has("ray"):
        raise InputError("--engine ray needs Ray: pip install -e '.[cluster]'")
    import ray

    ray.init(address=args.ray_address, ignore_reinit_error=True, log_to_driver=False)
    # Each run asks Ray for its GPUs; on a machine without any, it asks for none.
    gpus = args.gpus_per_run if ray.cluster_resources().get("GPU", 0) else 0
    remote = ray.remote(num_gpus=gpus)(run_one)
    refs = {pair.name: remote.remote(cmd, log) for pair, cmd, log in todo}
    return {name: ray.get(ref) for name, ref in refs.items()}


def _on_slurm(args: argparse.Namespace, todo: list) -> dict[str, int]:
    if not _has("submitit"):
        raise InputError("--engine slurm needs submitit: pip install -e '.[cluster]'")
    import submitit

    folder = str(args.sweep_dir.resolve() / "submitit")
    minutes = int(((args.hours or 10) + 0.5) * 60)
    # The executor named outright: --slurm-local is submitit's local executor, anything else a Slurm cluster.
    if args.slurm_local:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=minutes, gpus_per_node=args.gpus_per_run)
    else:
        executor = submitit.SlurmExecutor(folder=folder)
        executor.update_parameters(time=minutes, gpus_per_node=args.gpus_per_run,
                                   **({"partition": args.slurm_partition} if args.slurm_partition else {}))
    jobs = {pair.name: executor.submit(run_one, cmd, log) for pair, cmd, log in todo}
    return {name: job.result() for name, job in jobs.items()}


def summarise(args: argparse.Namespace) -> dict:
    """Per pair, the base and final scores; per model, PostTrainBench's weighted average of what it has."""
    from graph.checkpoints import read_state
    from tasks import task_class

    rows = []
    for pair in pairs(args):
        values, pending = read_state(args.sweep_dir.resolve() / pair.name / "checkpoints.sqlite")
        base, final = values.get("baseline"), values.get("final")
        model = final.model if final is not None and final.model is not None else None
        rows.append({**asdict(pair), "finished": bool(values.get("stop_reason")),
                     "base": base.accuracy if base else None, "final": model.accuracy if model else None,
                     "final_kind": final.kind if final is not None else None,
                     "final_base": final.base.accuracy if final is not None and final.base is not None else None,
                     "interval": [final.comparison.low, final.comparison.high]
                     if final is not None and final.comparison is not None else None,
                     "canonical": model.canonical if model else (base.canonical if base else None),
                     "weight": task_class(pair.task).ptb_weight})
    averages = {}
    for m in sorted({r["model"] for r in rows}):
        scored = [r for r in rows if r["model"] == m and r["weight"] and r["final"] is not None]
        total = sum(r["weight"] for r in scored)
        averages[m] = {"weighted_average": sum(r["weight"] * r["final"] for r in scored) / total if total else None,
                       "tasks": [r["task"] for r in scored], "weight_covered": round(total, 3)}
    summary = {"pairs": rows, "averages": averages}
    out = args.sweep_dir.resolve()
    (out / f"{SUMMARY}.json").write_text(json.dumps(summary, indent=2))
    (out / f"{SUMMARY}.md").write_text(_markdown(summary))
    _plot(rows, out / "sweep_scores.png")
    return summary


def _markdown(summary: dict) -> str:
    f = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    lines = ["# Sweep summary", "", "| task | base model | finished | base | final | final's base | paired 95% "
             "interval | canonical |", "|---|---|---|---|---|---|---|---|"]
    for r in summary["pairs"]:
        interval = "–" if r["interval"] is None else f"[{r['interval'][0]:+.3f}, {r['interval'][1]:+.3f}]"
        lines.append(f"| {r['task']} | {r['model']} | {'yes' if r['finished'] else 'no'} | {f(r['base'])} | "
                     f"{f(r['final'])} ({r['final_kind'] or '–'}) | {f(r['final_base'])} | {interval} | "
                     f"{r['canonical']} |")
    lines += ["", "Weighted average (PostTrainBench v1.2 weights, over the weighted tasks each model has; tasks "
              "without a weight are reported apart):", ""]
    for m, a in summary["averages"].items():
        lines.append(f"- {m}: {f(a['weighted_average'])} over {', '.join(a['tasks']) or 'no scored task'} "
                     f"(weights covering {a['weight_covered']} of 1.0)")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows)), 3), dpi=110)
    try:
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r["base"] or 0 for r in rows], 0.4, label="base", color="#7f7f7f")
        ax.bar([x + 0.2 for x in xs], [r["final"] or 0 for r in rows], 0.4, label="final", color="#4a6fa5")
        ax.set_xticks(list(xs), [f"{r['task']}\n{Path(r['model']).name[:16]}" for r in rows], fontsize=7)
        ax.set_ylabel("score")
        ax.legend(fontsize=8, frameon=False)
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        codes = execute(args)
        summarise(args)
    except PosttrainError as e:
        print(e.headline(), file=sys.stderr)
        return e.exit_code
    print(f"summary: {args.sweep_dir / (SUMMARY + '.md')}")
    failed = {k: v for k, v in codes.items() if v}
    if failed:
        print(f"runs that did not finish (re-run the sweep to resume them): {failed}", file=sys.stderr)
        return max(failed.values())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
