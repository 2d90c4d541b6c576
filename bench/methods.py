"""Measure the training methods on one run: the playbook plans every iteration, except that iteration i uses the
i-th method named here (its sampling knobs set as the playbook sets them, with --questions questions).

    .venv/bin/python bench/methods.py --task gsm8k --methods self_distill,dpo --questions 16 --workspace DIR

Everything else is an ordinary run (`python -m graph.run`): baseline, data, validation, LlamaFactory, the
evaluation's own provider, the logger. Each iteration is compared, paired, with the best model before it. Prints
one line per iteration: method, wall time, rows, the sampling pass rate, the score and the paired comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from core.handoffs import DatasetManifest, Evidence, IterationPlan  # noqa: E402
from roles.playbook import Playbook, _sampled  # noqa: E402


class MethodSchedule(Playbook):
    """The playbook, with each iteration's method fixed in advance."""

    def __init__(self, methods: list[str], questions: int) -> None:
        self.methods, self.questions = methods, questions

    def plan(self, ev: Evidence) -> IterationPlan:
        plan = super().plan(ev)
        method = self.methods[min(ev.iteration, len(self.methods)) - 1]
        if method == plan.method:
            return plan
        if method != "sft":
            _sampled(ev, plan.data, plan.train, method)
            plan.data.questions = self.questions
        plan.method = method
        plan.objective = f"measure {method} (bench/methods.py fixed the method of this iteration)"
        plan.changes = [f"{method} on {self.questions} training questions, {plan.data.samples} answers each"
                        if method != "sft" else "SFT on the training source"]
        return plan


def main(argv: list[str] | None = None) -> int:
    from graph.run import execute, parse_args, quiet_libraries, settings_from_args

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="self_distill,dpo", help="comma-separated: sft, self_distill, dpo")
    p.add_argument("--questions", type=int, default=16, help="training questions a sampled method answers")
    args, rest = p.parse_known_args(argv)
    methods = args.methods.split(",")
    if not set(methods) <= {"sft", "self_distill", "dpo"}:
        p.error(f"unknown method in {args.methods}")
    settings = settings_from_args(parse_args([*rest, "--max-iterations", str(len(methods))]))
    quiet_libraries()
    t0 = time.monotonic()
    state = execute(settings, resume=False, policies={"planner": MethodSchedule(methods, args.questions)})
    print(f"baseline {state['baseline'].accuracy:.4f} on {state['baseline'].n}; run {time.monotonic() - t0:.0f} s")
    for r in state["history"]:
        manifests = sorted(Path(settings.workspace).glob(f"*/iterations/{r.iteration:03d}/data/**/manifest.json"))
        sampling = DatasetManifest.model_validate_json(manifests[-1].read_text()).sampling if manifests else None
        if sampling:
            print(f"  sampling: {sampling.questions} questions x {sampling.samples} at {sampling.temperature:g}, "
                  f"pass rate {sampling.pass_rate:.3f}")
        print(f"iteration {r.iteration}: {r.method}; {r.rows} rows; score "
              f"{'-' if r.score is None else f'{r.score:.4f}'}; kept {r.kept}; "
              f"vs best {r.vs.text() if r.vs else '-'}; strategies {','.join(r.strategies)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
