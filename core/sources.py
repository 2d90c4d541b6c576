"""Training data source names, parsed in one place: `benchmark_train`, `local:<path.jsonl>`, `hub:<dataset>`.

A remote model API is never a source (hard rule): names that point at one are recognised and refused here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.errors import SourceError

BENCHMARK_TRAIN = "benchmark_train"
PATTERN = r"^(benchmark_train|local:[A-Za-z0-9_./~-]+[.]jsonl|hub:[A-Za-z0-9_./-]+)$"
"""For handoff schemas, so a grammar-constrained model writes only names of these kinds; `problem` still decides."""
GRAMMAR = "benchmark_train, local:<path.jsonl> or hub:<dataset>"
_REMOTE = ("http://", "https://", "openai:", "openai-compatible:", "api:")


@dataclass(frozen=True)
class Source:
    kind: Literal["benchmark_train", "local", "hub"]
    arg: str = ""
    """The file for `local`, the dataset id for `hub`."""

    @property
    def path(self) -> Path:
        return Path(self.arg).expanduser()


def is_remote_api(name: str) -> bool:
    return name.strip().lower().startswith(_REMOTE)


def problem(name: str, *, check_files: bool = True) -> str | None:
    """Why `name` is not a usable source, or None."""
    if is_remote_api(name):
        return (f"refusing data source {name!r}: remote model APIs may be used only for evaluation judges, never to "
                "build training data")
    kind, sep, arg = name.partition(":")
    if name == BENCHMARK_TRAIN:
        return None
    if sep and kind == "local" and arg:
        if check_files and not Path(arg).expanduser().is_file():
            return f"source {name!r}: no such file"
        return None
    if sep and kind == "hub" and arg:
        return None
    return f"source {name!r}: use {GRAMMAR}"


def parse(name: str, *, check_files: bool = False) -> Source:
    """The parsed source; `SourceError` (back to the data engineer) when it is not one."""
    why = problem(name, check_files=check_files)
    if why:
        raise SourceError(why)
    kind, _, arg = name.partition(":")
    return Source(kind="benchmark_train", arg="") if name == BENCHMARK_TRAIN else Source(kind=kind, arg=arg)  # type: ignore[arg-type]
