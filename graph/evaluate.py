"""`python -m graph.evaluate --task T --model DIR`: score any model folder with the benchmark's canonical evaluation,
outside any run: the same code the loop runs, the same metrics.json and sample_summary.md.

- By default, the development slice (the sample floor, or --limit N): the number a run's baseline reports.
- `--full`: the whole test set.
- `--final`: PostTrainBench's final protocol (the whole test set, pristine evaluation code, seeds, lower max_tokens
  after a failed attempt); `--profile canonical` uses the benchmark's own max_tokens even on CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.errors import EXIT_OK, InputError, PosttrainError
from graph.run import _Parser, _path, quiet_libraries
from tasks import DEFAULT_TASK


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(prog="python -m graph.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default=DEFAULT_TASK, help=f"benchmark (default {DEFAULT_TASK})")
    p.add_argument("--model", required=True, help="model folder or HF id; 'base' is the embedded student")
    p.add_argument("--data-dir", type=_path, help="folder with the benchmark's files; default: the hub")
    p.add_argument("--judge", metavar="SPEC", help="judge model for judged benchmarks")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--limit", type=int, help="the first N test samples (default: the sample floor)")
    which.add_argument("--full", action="store_true", help="the whole test set")
    which.add_argument("--final", action="store_true", help="PostTrainBench's final protocol on the whole test set")
    p.add_argument("--start", type=int, default=0, help="skip the first N samples (a held-out slice)")
    p.add_argument("--seeds", type=int, help="final protocol: seeds to average (default: 1 when greedy, else 5)")
    p.add_argument("--profile", choices=["auto", "canonical"], default="auto",
                   help="auto: the CPU profile on CPU; canonical: the benchmark's own max_tokens everywhere")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--provider", choices=["auto", "prefixcache", "hf", "vllm"], default="auto")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int, default=0, help="the run's seed (development evaluations)")
    p.add_argument("--checksums", type=_path, metavar="FILE",
                   help="a run's eval_checksums.json: our evaluation files must still match it")
    p.add_argument("--out", type=_path, help="where to write the results (default evals/<task>-<model name>)")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def evaluate(args: argparse.Namespace, say=print):
    """Run the evaluation the arguments ask for; returns the EvalReport."""
    from core.workspace import Workspace
    from graph.run import _on_gpu
    from tasks import get_task
    from tools.evaluate import check_limit, choose_provider, run_eval
    from tools.final_eval import run_protocol
    from tools.guards import verify_eval_checksums
    from tools.model import check_base_model, resolve_base_model

    task = get_task(args.task, args.data_dir, judge=args.judge)
    model = resolve_base_model(None if args.model == "base" else args.model)
    check_base_model(model)
    on_gpu = _on_gpu(args.device)
    provider = choose_provider(args.provider, on_gpu)
    gen = task.generation(on_gpu)
    if args.profile == "canonical":
        gen = gen.model_copy(update={"max_tokens": task.max_tokens.canonical, "cascade": task.max_tokens.cascade,
                                     "canonical": True, "greedy": False})
    if args.checksums is not None:  # the run's own files, against what they were when the run started
        if not args.checksums.is_file():
            raise InputError(f"--checksums {args.checksums} not found")
        verify_eval_checksums(Workspace(args.checksums.parent))
    out = args.out or Path("evals") / f"{task.name}-{Path(str(model)).name}"
    size = task.benchmark_size()
    if args.final:
        return run_protocol(task, model, out, on_gpu=on_gpu, provider=provider, batch_size=args.batch_size,
                            gen=gen, seeds=args.seeds, on_progress=say)
    limit = size - args.start if args.full else (args.limit or task.sample_floor())
    if args.start + limit > size:
        raise InputError(f"samples {args.start + 1}-{args.start + limit} are past the {size} the benchmark has")
    check_limit(limit, size, task.full_size)
    return run_eval(task, model, out, limit=limit, on_gpu=on_gpu, provider=provider, batch_size=args.batch_size,
                    seed=args.seed, on_progress=say, start=args.start, gen=gen)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    args = parse_args(argv)
    if not args.verbose:
        quiet_libraries()
    try:
        report = evaluate(args)
    except PosttrainError as e:
        print(e.headline(), file=sys.stderr)
        return e.exit_code
    print(f"{report.metric} {report.accuracy:.4f} ± {report.stderr:.4f} on {report.n} samples "
          f"(max_tokens {report.max_tokens}{'' if report.canonical else ', CPU profile: not canonical'})")
    print(f"metrics: {report.metrics_path}\nsamples: {report.summary_path}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
