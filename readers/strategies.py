"""`python -m readers.strategies --memory-dir DIR [--memory-dir DIR ...]`: which of the seed paper's strategies were
tried, and how often they moved the score, over every run that wrote its log entries to those memories (the
report shows the same table for one run).

"Improved" counts iterations whose paired comparison with the best model before them lies wholly above zero (95%
interval); "up" those whose paired difference is merely positive; "kept" those that became final_model/.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from core.errors import EXIT_INPUT, InputError


def table(rows: Iterable[tuple[list[str], bool, bool, bool]]) -> dict[str, dict[str, int]]:
    """Per strategy code: how many iterations tried it, and how many of those improved, went up, were kept."""
    out: dict[str, dict[str, int]] = {}
    for codes, improved, up, kept in rows:
        for code in codes:
            counts = out.setdefault(code, {"tried": 0, "improved": 0, "up": 0, "kept": 0})
            counts["tried"] += 1
            counts["improved"] += improved
            counts["up"] += up
            counts["kept"] += kept
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], int(kv[0][1:]))))


def from_memory(dirs: list[Path]) -> dict[str, dict[str, int]]:
    from memory.store import ExperimentMemory

    rows = []
    for d in dirs:
        if not d.is_dir():
            raise InputError(f"--memory-dir {d} not found")
        for e in ExperimentMemory(d).entries("log_entry"):
            m = e.metadata
            codes = [c for c in str(m.get("strategies", "")).split(",") if c]
            rows.append((codes, bool(m.get("improved")), bool(m.get("up")), bool(m.get("kept"))))
    return table(rows)


def render(counts: dict[str, dict[str, int]]) -> str:
    from roles.strategies import NAMES

    lines = [f"{'strategy':<46} tried  improved  up  kept"]
    for code, c in counts.items():
        lines.append(f"{code + ' ' + NAMES.get(code, ''):<46} {c['tried']:>5}  {c['improved']:>8}  {c['up']:>2}  "
                     f"{c['kept']:>4}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m readers.strategies", description=__doc__.split("\n\n")[0])
    p.add_argument("--memory-dir", type=Path, action="append", required=True)
    args = p.parse_args(argv)
    try:
        print(render(from_memory(args.memory_dir)))
    except InputError as e:
        print(e.headline(), file=sys.stderr)
        return EXIT_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
