"""The seed paper's vocabulary of strategies (its appendix B), named for every iteration from what its plan and its
training run actually did, so that the report can count which strategies moved the score. Only the strategies whose
presence varies between iterations are named (every plan here starts from a baseline, states a hypothesis and
compares on a subset of the benchmark)."""

from __future__ import annotations

from core.handoffs import IterationPlan, TrainResult

NAMES = {
    "P1": "plan from the baseline", "P2": "diagnose error patterns",
    "D1": "benchmark-related data", "D2": "more data", "D3": "harder data", "D4": "data synthesis",
    "D5": "data augmentation", "T1": "prompt alignment (the evaluation's system message)",
    "T2": "template change", "O3": "targeted answer format",
    "U1": "full SFT", "U2": "PEFT (LoRA)", "U3": "DPO-style training", "U4": "self-distillation",
    "U5": "continual training", "U6": "train from the base model", "U7": "annealing (gentler continuation)",
}


def strategies(plan: IterationPlan, last: IterationPlan | None, result: TrainResult | None,
               own_template: bool = False) -> list[str]:
    """The strategy codes of one iteration, in the paper's order."""
    d, t = plan.data, (result.knobs if result and result.knobs else plan.train)
    tags = {
        "P1": plan.iteration == 1,
        "P2": any("(" in p for p in plan.problems),  # problems cite failure modes with their counts
        "D1": "benchmark_train" in d.sources,
        "D2": last is not None and d.max_rows > last.data.max_rows,
        "D3": d.difficulty == "harder",
        "D4": d.synthesize > 0 or plan.method == "self_distill",
        "D5": d.augment != "none",
        "T1": d.with_system,
        "T2": own_template,
        "O3": d.rewrite_answers,
        "U1": plan.method in ("sft", "self_distill") and t.finetuning_type == "full",
        "U2": t.finetuning_type == "lora",
        "U3": plan.method == "dpo",
        "U4": plan.method == "self_distill",
        "U5": t.start_from == "best",
        "U6": t.start_from == "base",
        "U7": t.start_from == "best" and last is not None and t.learning_rate < last.train.learning_rate,
    }
    return [code for code in NAMES if tags[code]]
