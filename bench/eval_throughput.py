"""CPU evaluation throughput: inspect's `hf/` provider against `prefixcache/` on the canonical gsm8k task.

Throughput mode (default) runs the first --limit test samples of the canonical 10-shot task with `hf/` once (batch
--hf-batch-size, on the first --hf-limit samples: it is slow) and with `prefixcache/` at each of --batch-sizes, and
prints samples/s, generated tokens/s, each ratio to `hf/`, and whether the shared completions are identical.
--floor runs the sample floor (`task.sample_floor()`, 66 for gsm8k) with `prefixcache/` and prints wall time and
accuracy; unless --skip-hf it also runs `hf/` on the first --limit samples and compares their completions.

Greedy decoding throughout (temperature 0; `hf/` needs do_sample=False for that). Model loading is timed
separately; the prefix prefill is part of each `prefixcache/` run, because every evaluation pays it once.
Timings on a shared machine are noisy: the load average is printed before and after each run.

    python bench/eval_throughput.py --limit 16 --hf-limit 8
    python bench/eval_throughput.py --floor --skip-hf
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


@dataclass
class Run:
    """One evaluation: its completions by sample id, timings and score."""

    provider: str
    batch_size: int
    completions: dict[str, str]
    wall_s: float
    load_s: float
    generated_tokens: int
    accuracy: float | None
    load_avg: tuple[float, float]

    @property
    def samples_per_s(self) -> float:
        return len(self.completions) / self.wall_s

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=16, help="samples per throughput run; in --floor mode, samples "
                   "compared with hf/ (default 16)")
    p.add_argument("--max-tokens", type=int, default=256, help="max new tokens (default 256, the CPU profile)")
    p.add_argument("--model", default="embedded", help="'embedded' (SmolLM2-135M-Instruct) or an HF model folder")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="data folder (default ../shared/data)")
    p.add_argument("--batch-sizes", default="1,4,16", help="throughput mode prefixcache/ batch sizes (default 1,4,16)")
    p.add_argument("--hf-batch-size", type=int, default=8, help="throughput mode hf/ batch size (default 8)")
    p.add_argument("--hf-limit", type=int, default=None, help="throughput mode hf/ samples (default: --limit)")
    p.add_argument("--batch-size", type=int, default=None, help="--floor mode batch size (default: the whole "
                   "floor in one batch)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for both providers (default: "
                   "tools.prefix_cache.default_threads(), 1 on a 2-core machine)")
    p.add_argument("--skip-hf", action="store_true", help="time prefixcache/ only")
    p.add_argument("--floor", action="store_true", help="run the sample-floor evaluation with prefixcache/")
    args = p.parse_args(argv)
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        p.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    args.hf_limit = args.limit if args.hf_limit is None else args.hf_limit
    if min(args.limit, args.hf_limit, args.max_tokens, args.batch_size or 1, args.hf_batch_size,
           *args.batch_sizes) < 1:
        p.error("--limit, --hf-limit, --max-tokens and batch sizes must be positive")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be positive")
    if not (args.data_dir / "gsm8k" / "test.jsonl").is_file():
        p.error(f"no gsm8k data under {args.data_dir}")
    return args


def model_dir(spec: str) -> str:
    from tools.model import EMBEDDED, resolve_base_model

    return resolve_base_model(None if spec in ("embedded", EMBEDDED) else spec)


def count_tokens(tokenizer: Any, texts: list[str]) -> int:
    """Generated tokens, counted the same way for both providers: the completion re-tokenized (no special tokens).

    (`hf/` reports its batch's longest output for every sample, so its usage cannot be summed.)
    """
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def evaluate(task: Any, provider: str, path: str, batch_size: int, limit: int, max_tokens: int, threads: int,
             log_dir: Path, tokenizer: Any) -> Run:
    """Evaluate `limit` samples with a freshly loaded model (no state carried over between runs)."""
    import inspect_ai
    from inspect_ai.model import get_model

    import tools._registry  # noqa: F401  registers prefixcache/ even where the entry point is not installed

    # hf/ needs do_sample=False for greedy decoding; its batch size is max_connections (set below for both).
    args: dict[str, Any] = {"do_sample": False} if provider == "hf" else {"batch_size": batch_size, "threads": threads}
    start = time.monotonic()
    model = get_model(f"{provider}/{path}", memoize=False, **args)
    load_s = time.monotonic() - start
    before = os.getloadavg()[0]
    start = time.monotonic()
    (log,) = inspect_ai.eval(task, model=model, limit=limit, max_tokens=max_tokens, temperature=0.0,
                             max_connections=batch_size, log_dir=str(log_dir / f"{provider}-{batch_size}"),
                             display="none")
    wall_s = time.monotonic() - start
    if log.status != "success" or not log.samples:
        raise RuntimeError(f"{provider}/ evaluation failed: {log.error}")
    completions = {str(s.id): s.output.completion for s in log.samples}
    accuracy = None
    if log.results and log.results.scores and "accuracy" in log.results.scores[0].metrics:
        accuracy = log.results.scores[0].metrics["accuracy"].value
    return Run(provider, batch_size, completions, wall_s, load_s, count_tokens(tokenizer, list(completions.values())),
               accuracy, (before, os.getloadavg()[0]))


def print_run(run: Run) -> None:
    acc = f"{run.accuracy:.3f}" if run.accuracy is not None else "-"
    print(f"{run.provider:<12} batch {run.batch_size:>3}  samples {len(run.completions):>3}  wall {run.wall_s:7.1f} s  "
          f"{run.samples_per_s:7.4f} samples/s  {run.tokens_per_s:7.1f} gen tok/s  ({run.generated_tokens} tokens)  "
          f"accuracy {acc}  load {run.load_s:.1f} s  loadavg {run.load_avg[0]:.1f}->{run.load_avg[1]:.1f}",
          flush=True)


def compare(reference: Run, other: Run) -> int:
    """Print and count the samples whose completions differ (only ids both runs have)."""
    shared = [i for i in reference.completions if i in other.completions]
    differing = [i for i in shared if reference.completions[i] != other.completions[i]]
    print(f"  identical completions ({reference.provider}/ batch {reference.batch_size} vs {other.provider}/ batch "
          f"{other.batch_size}): {len(shared) - len(differing)}/{len(shared)}", flush=True)
    for i in differing:
        print(f"    differs: {i}\n      {reference.provider}: {reference.completions[i]!r}\n"
              f"      {other.provider}: {other.completions[i]!r}")
    return len(differing)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("INSPECT_DISPLAY", "none")
    sys.path.insert(0, str(REPO))
    import torch
    from transformers import AutoTokenizer

    from tasks import get_task
    from tools.prefix_cache import default_threads

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)  # hf/ runs in this thread pool; prefixcache/ gets the same number

    benchmark = get_task("gsm8k", args.data_dir.resolve())
    task = benchmark.inspect_task()
    path = model_dir(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    print(f"model {path}\nmax_tokens {args.max_tokens}, greedy; {os.cpu_count()} CPUs, {threads} torch threads; "
          f"loadavg at start {os.getloadavg()}", flush=True)
    mismatches = 0
    with tempfile.TemporaryDirectory(prefix="eval-throughput-") as tmp:
        logs = Path(tmp)
        if args.floor:
            floor = benchmark.sample_floor()
            batch_size = args.batch_size or floor
            print(f"sample floor: {floor} samples, prefixcache/ batch {batch_size}", flush=True)
            run = evaluate(task, "prefixcache", path, batch_size, floor, args.max_tokens, threads, logs,
                           tokenizer)
            print_run(run)
            print(f"floor evaluation: {floor} samples in {run.wall_s:.1f} s (+{run.load_s:.1f} s model load), "
                  f"accuracy {run.accuracy}", flush=True)
            if not args.skip_hf:
                compared = min(args.limit, floor)
                hf = evaluate(task, "hf", path, min(batch_size, compared), compared, args.max_tokens, threads, logs,
                              tokenizer)
                print_run(hf)
                mismatches += compare(hf, run)
        else:
            hf = None
            if not args.skip_hf:
                hf = evaluate(task, "hf", path, args.hf_batch_size, args.hf_limit, args.max_tokens, threads, logs,
                              tokenizer)
                print_run(hf)
            for batch_size in args.batch_sizes:
                pc = evaluate(task, "prefixcache", path, batch_size, args.limit, args.max_tokens, threads, logs,
                              tokenizer)
                print_run(pc)
                if hf is not None:
                    print(f"  ratio prefixcache/ batch {batch_size} to hf/ batch {hf.batch_size}: "
                          f"{pc.samples_per_s / hf.samples_per_s:.2f}x samples/s, "
                          f"{pc.tokens_per_s / hf.tokens_per_s:.2f}x gen tok/s", flush=True)
                    mismatches += compare(hf, pc)
    print(f"loadavg at end {os.getloadavg()}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
