"""`python -m graph.run --task NAME`: start, or resume, an autonomous post-training run.

Every expected failure is a `core.errors.PosttrainError`: it ends in one line on stderr and its exit code, plus the
resume hint where the run is saved and can continue. The exit codes are `core.errors.EXIT_CODES`.

This module imports nothing heavy at module level: `--help` and bad input answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from core.errors import EXIT_BUG, EXIT_INPUT, EXIT_OK, InputError, PosttrainError, resume_hint
from core.redact import redact
from tasks import DEFAULT_TASK

SETTING_FLAGS = ("task", "data_dir", "base_model", "workspace", "hours", "max_iterations", "target", "backbone",
                 "role_backbone", "judge", "generator", "train_file", "device", "eval_limit", "eval_provider",
                 "eval_batch_size", "final_eval", "memory_dir", "seed", "config", "allow_overlap", "price")
"""The flags that make a run's settings; --resume takes the saved ones and refuses these."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line and a hint, not the usage block
        self.exit(EXIT_INPUT, f"error: {message} (see python -m graph.run --help)\n")


def _path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty")  # Path("") would be the current folder
    return Path(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(prog="python -m graph.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", help=f"benchmark to post-train for (default {DEFAULT_TASK}; see --list-tasks)")
    p.add_argument("--data-dir", type=_path, help="folder with <task>/<split>.jsonl; default: the hub")
    p.add_argument("--base-model", help="HF id or local folder; default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--workspace", type=_path, help="run folder (default runs/<task>-<time>)")
    p.add_argument("--resume", type=_path, metavar="WORKSPACE", help="continue the run in WORKSPACE")
    p.add_argument("--hours", type=float, help="budget of work, in hours (default 0.75)")
    p.add_argument("--max-iterations", type=int, help="iteration cap (default 2)")
    p.add_argument("--target", type=float, help="stop once the development score reaches this (0-1)")
    p.add_argument("--backbone", help="backbone for every role (default playbook)")
    p.add_argument(
        "--role-backbone",
        action="append",
        default=[],
        metavar="ROLE=SPEC",
        help="per-role backbone override; repeatable",
    )
    p.add_argument("--judge", metavar="SPEC", help="judge model for judged benchmarks (a backbone spec)")
    p.add_argument("--generator", metavar="SPEC", help="local model that writes augmented and synthetic training "
                   "rows: student, or openai-compatible:URL#MODEL on a local host (remote APIs are refused)")
    p.add_argument("--max-llm-tokens", type=int, metavar="N",
                   help="stop (resumable) once the LLM backbones spent N tokens; --resume may raise it")
    p.add_argument("--price", action="append", default=[], metavar="SPEC=IN,OUT",
                   help="USD per million input and output tokens of a backbone (spec or model name); repeatable")
    p.add_argument(
        "--train-file",
        type=_path,
        metavar="FILE",
        help="a JSONL in the benchmark's own schema that replaces its default training source",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--eval-limit", type=int, help="development evaluation size (default: the sample floor)")
    p.add_argument("--eval-provider", choices=["auto", "prefixcache", "hf", "vllm"])
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--final-eval", choices=["auto", "full", "none"])
    p.add_argument("--memory-dir", type=_path, help="experiment memory shared between runs")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--allow-overlap",
        action="store_true",
        default=None,
        help="run even if the training source shares items with the test set",
    )
    p.add_argument(
        "--config",
        type=_path,
        metavar="FILE",
        help="settings from a TOML or YAML file (same names as the options, e.g. role_backbones); "
        "options given on the command line win",
    )
    p.add_argument(
        "--trace",
        type=_path,
        metavar="DIR",
        help="also write the run's traces to DIR/runs.jsonl (offline; view: python -m graph.tracing view DIR)",
    )
    p.add_argument("--verbose", action="store_true", help="let libraries print their own progress bars and logs")
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace):
    """The run's settings: the saved ones on --resume (which refuses setting flags), else flags over config file."""
    from core.settings import RunSettings

    if args.resume:
        given = [f"--{f.replace('_', '-')}" for f in SETTING_FLAGS if getattr(args, f) not in (None, [])]
        if given:
            raise InputError(
                f"--resume continues with the run's saved settings; drop {', '.join(given)} "
                "(or start a new run with them)"
            )
        # The folder given wins over the saved path: a run that was moved resumes where it now is. A spent token
        # budget is the one setting a resume may raise (that is how a run stopped by it continues).
        update = {"workspace": args.resume.resolve()}
        if args.max_llm_tokens is not None:
            update["max_llm_tokens"] = args.max_llm_tokens
        settings = load_saved(args.resume).model_copy(update=update)
        if args.max_llm_tokens is not None:
            settings = _validated(type(settings), settings.model_dump())
            settings.save()
        return settings
    overrides = {}
    for item in args.role_backbone:
        role, sep, spec = item.partition("=")
        if not sep or not spec:
            raise InputError(f"--role-backbone expects ROLE=SPEC, got {item!r}")
        overrides[role] = spec
    from_file = _config_file(args.config) if args.config else {}
    task = args.task or from_file.get("task", DEFAULT_TASK)
    workspace = args.workspace if args.workspace is not None else from_file.get("workspace")
    if workspace is None:
        workspace = Path("runs") / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    fields = {name: getattr(args, name) for name in SETTING_FLAGS if name not in ("role_backbone", "config", "price")}
    fields |= {"task": task, "workspace": workspace, "role_backbones": overrides, "prices": _prices(args.price),
               "max_llm_tokens": args.max_llm_tokens}
    given = {k: v for k, v in fields.items() if v is not None and v != {}}
    if isinstance(from_file.get("role_backbones"), dict) and "role_backbones" in given:
        given["role_backbones"] = {**from_file["role_backbones"], **given["role_backbones"]}
    settings = _validated(RunSettings, {**from_file, **given})
    if (settings.workspace / "run_settings.json").exists():
        raise InputError(f"{settings.workspace} already holds a run; continue it with --resume {settings.workspace}")
    return settings


def _prices(items: list[str]) -> dict[str, tuple[float, float]]:
    prices = {}
    for item in items:
        name, sep, pair = item.rpartition("=")
        try:
            prices[name] = tuple(float(x) for x in pair.split(","))
            assert sep and name and len(prices[name]) == 2
        except (ValueError, AssertionError):
            raise InputError(f"--price expects SPEC=IN,OUT (USD per million tokens), got {item!r}") from None
    return prices


def load_saved(workspace: Path):
    from core.settings import SETTINGS_FILE, RunSettings

    path = workspace / SETTINGS_FILE
    if not path.is_file():
        raise InputError(f"nothing to resume in {workspace}: no {SETTINGS_FILE}")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    import json

    try:
        data = json.loads(text)
    except ValueError as e:
        raise InputError(f"{path} is not valid JSON ({e}); it is not a settings file this tool wrote") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} does not hold a mapping of settings")
    return _validated(RunSettings, data, where=str(path))


def _validated(model: Any, data: dict, where: str = ""):
    from pydantic import ValidationError

    try:
        return model(**data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        loc = first["loc"][:1]
        name = f"--{'-'.join(map(str, loc)).replace('_', '-')}" if loc else "settings"
        raise InputError(f"{where + ': ' if where else ''}{name}: {first['msg']}") from None
    except TypeError as e:  # keys that are not strings
        raise InputError(f"{where or 'settings'}: {e}") from None


def _config_file(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"config file {path} is not UTF-8 text (byte {e.start})") from None
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


def check_writable(path: Path, flag: str) -> None:
    """`path` is (or can become) a folder this process can write in; `InputError` naming the flag otherwise."""
    probe = path / f".posttrain-write-check-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"{flag} {path} is not a writable folder: {e.strerror or e}") from None


def build_context(settings, stream=sys.stdout, *, resume: bool = False, policies: dict | None = None):
    """Check everything that can be checked before the run is saved, save it, then reach the backbones."""
    from core.specs import generator_problem
    from core.workspace import Workspace
    from roles.backbones import check_specs, policies_for
    from roles.context import Progress, RunContext
    from tasks import get_task
    from tools.model import check_base_model, resolve_base_model

    if settings.data_dir is not None and not settings.data_dir.is_dir():
        raise InputError(f"data dir not found: {settings.data_dir}")
    task = get_task(settings.task, settings.data_dir, judge=settings.judge, train_file=settings.train_file)
    check_task_data(task)
    from tools.evaluate import check_limit

    check_limit(settings.eval_limit or task.sample_floor(), task.benchmark_size(), task.full_size)
    check_specs(settings)
    if settings.generator and (problem := generator_problem(settings.generator)):
        raise InputError(problem)
    progress = Progress(budget_s=settings.hours * 3600, stream=stream)
    progress("preparing the base model" + ("" if settings.base_model else " (embedded SmolLM2-135M-Instruct)"))
    base = resolve_base_model(settings.base_model)
    check_base_model(base)
    on_gpu = _on_gpu(settings.device)
    check_overlap(task, settings.allow_overlap, progress)
    # Saved before the backbones are reached: a backbone that does not answer leaves a run that --resume takes up.
    if not resume:
        settings.save()
    from roles.llm import TokenMeter

    meter = TokenMeter(settings.max_llm_tokens)
    policies = {**policies_for(settings, meter), **(policies or {})}  # bench/ scripts may fix a role's choices
    from memory.store import ExperimentMemory  # after the input checks: chromadb takes seconds to import

    ctx = RunContext(
        settings=settings,
        task=task,
        ws=Workspace(settings.workspace),
        base_model=base,
        on_gpu=on_gpu,
        memory=ExperimentMemory(settings.memory_path),
        policies=policies,
        progress=progress,
        meter=meter,
    )
    from roles.agent.policy import attach

    attach(policies, ctx)  # agent tools read the run's task, evidence and memory
    return ctx


def check_task_data(task) -> None:
    """Every test row passes the task's own checks, and the training source loads: bad data fails now, named."""
    rows = task.load_test()
    for i, row in enumerate(rows, 1):
        problem = task.test_row_problem(row) if isinstance(row, dict) else "not a JSON object"
        if problem:
            raise InputError(f"{task.name} test row {i}: {problem}")
    task.training_rows()


def check_overlap(task, allowed: bool, say) -> None:
    """Refuse (unless allowed) a training source or an evaluation prompt that holds test items."""
    from tools.data import shared_items

    found = shared_items(task)
    if not found:
        return
    message = "; ".join(found)
    if allowed:
        say(f"warning: {message} (allowed by --allow-overlap)")
        return
    raise InputError(f"{message}: the scores would measure memory, not skill (--allow-overlap runs anyway)")


def _on_gpu(device: str) -> bool:
    if device == "cpu":
        return False
    import torch  # respects CUDA_VISIBLE_DEVICES: only the devices it names are visible

    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        raise InputError("--device cuda, but no CUDA device is visible (check CUDA_VISIBLE_DEVICES)")
    return available


def execute(settings, *, resume: bool, stream=sys.stdout, trace_dir: Path | None = None,
            policies: dict | None = None) -> dict:
    """Run (or continue) the graph to its end, holding the workspace's lock; returns the final state values."""
    from core.workspace import Workspace

    check_writable(settings.workspace, "--workspace")
    check_writable(settings.memory_path, "--memory-dir")
    if trace_dir is not None:
        check_writable(trace_dir, "--trace")
    ws = Workspace(settings.workspace)
    with ws.lock():
        if not resume and ws.settings_file.exists():  # checked again under the lock: two starts may race
            raise InputError(f"{ws.root} already holds a run; continue it with --resume {ws.root}")
        # Bad input fails here, before the heavy imports.
        ctx = build_context(settings, stream, resume=resume, policies=policies)
        import sqlite3

        from langgraph.checkpoint.sqlite import SqliteSaver

        from graph.build import builder, checkpoint_serde, run_to_end
        from graph.tracing import flush_traces, tracing_config

        conn = sqlite3.connect(ctx.ws.checkpoint_db, check_same_thread=False)
        try:
            graph = builder().compile(checkpointer=SqliteSaver(conn, serde=checkpoint_serde()))
            config = {
                "configurable": {"thread_id": "run"},
                "recursion_limit": 100_000,
                **tracing_config(settings, trace_dir),
            }
            if graph.get_state(config).values.get("stop_reason"):
                ctx.progress("this run already finished; nothing to resume")
            try:
                return run_to_end(graph, config, ctx)
            finally:
                flush_traces(config)  # a crashed run still delivers what it traced
        finally:
            conn.close()


def summary_table(state: dict, settings: Any = None) -> str:
    base = state.get("baseline")
    lines = [
        f"{'iteration':>9}  {'score':>7}  {'delta':>7}  kept  status",
        f"{'base':>9}  {base.accuracy:>7.3f}  {'':>7}  -     baseline" if base else "",
    ]
    for r in state.get("history", []):
        score = f"{r.score:.3f}" if r.score is not None else "-"
        delta = f"{r.delta_vs_base:+.3f}" if r.delta_vs_base is not None else "-"
        paired = f"  paired {r.vs.text()}" if r.vs else ""
        lines.append(f"{r.iteration:>9}  {score:>7}  {delta:>7}  {'yes' if r.kept else 'no ':<4}  {r.status}{paired}")
    final = state.get("final")
    if final is not None and final.model is not None:
        lines.append(f"final_model/, {final.kind}: {final.model.accuracy:.3f} ± {final.model.stderr:.3f} "
                     f"(n={final.model.n})" + (f"; base on the same samples {final.base.accuracy:.3f}"
                                               if final.base is not None else ""))
        if final.comparison is not None:
            lines.append(f"paired: {final.comparison.text()}")
    elif final is not None:
        lines.append(f"final evaluation {final.kind}: {final.note or final.identity}")
    if settings is not None and state.get("llm_tokens"):
        lines += ["LLM tokens, " + line for line in settings.token_lines(state["llm_tokens"])]
    if base and not base.canonical:
        lines.append(
            f"note: CPU profile (max_tokens {base.max_tokens}): scores are not canonical PostTrainBench scores"
        )
    return "\n".join(x for x in lines if x)


def quiet_libraries() -> None:
    """Library progress bars and chatter off: they interleave with the run's own progress lines."""
    for var, value in (
        ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
        ("TQDM_DISABLE", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
        ("LLAMAFACTORY_VERBOSITY", "ERROR"),
    ):
        os.environ.setdefault(var, value)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")  # llamafactory pins datasets<=4.0.0; see requirements.in
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    if not args.verbose:
        quiet_libraries()
    settings = None
    try:
        settings = settings_from_args(args)
        state = execute(
            settings, resume=args.resume is not None, trace_dir=args.trace.resolve() if args.trace else None
        )
    except PosttrainError as e:
        print(e.headline(), file=sys.stderr)
        if e.resumable and settings is not None and (settings.workspace / "run_settings.json").is_file():
            print(resume_hint(e, settings.workspace), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        if settings is not None and (settings.workspace / "run_settings.json").is_file():
            print(f"continue with python -m graph.run --resume {settings.workspace}", file=sys.stderr)
        return 130
    except Exception:  # a bug: the traceback is printed, through the redactor
        import traceback

        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        if settings is not None and (settings.workspace / "run_settings.json").is_file():
            print(
                f"the state up to the last finished step is saved; after a fix, continue with python -m graph.run "
                f"--resume {settings.workspace}",
                file=sys.stderr,
            )
        return EXIT_BUG
    print(f"\nstopped: {state.get('stop_reason', 'unknown')}")
    print(summary_table(state, settings))
    from core.workspace import Workspace

    print(f"workspace: {settings.workspace}  (log: {Workspace(settings.workspace).log_path})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
