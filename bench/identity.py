"""How far fine-tuning moves a model's weights, against how far apart two different models of the same shape are:
the figures behind the identity check's threshold (tools/identity.py).

    python bench/identity.py --base BASE_DIR --tuned TUNED_DIR [TUNED_DIR ...]

Prints, for each tuned model and for a copy of the base's architecture initialised afresh (seed 0), the largest and
the median per-tensor relative change |W - W_base| / |W_base|.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.identity import MAX_RELATIVE_CHANGE, measure  # noqa: E402


def fresh_copy(base: Path, out: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base)).save_pretrained(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--tuned", type=Path, nargs="*", default=[])
    args = p.parse_args()
    print(f"threshold: largest relative change ≤ {MAX_RELATIVE_CHANGE}")
    for tuned in args.tuned:
        print(f"fine-tuned {tuned}: {measure(tuned, args.base).text()}")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"differently initialised copy: {measure(fresh_copy(args.base, Path(tmp)), args.base).text()}")


if __name__ == "__main__":
    main()
