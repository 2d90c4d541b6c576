"""Hard rules enforced in code: evaluation code checksums, model lineage and GPU visibility.

The evaluation code is every file the evaluation goes through: the benchmark's own inspect-evals package and our
task package (the task declares them), inspect's scorer helpers, our evaluation tool and provider registration,
and the generation provider in use. A package is checksummed whole, so editing any of its files is caught.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterable
from pathlib import Path

from core.errors import GuardViolation
from core.workspace import LINEAGE_FILE, Workspace

COMMON_EVAL_MODULES = (
    "inspect_ai.scorer._common",
    "tasks",
    "tools.evaluate",
    "tools._registry",
)
PROVIDER_MODULES = {
    "prefixcache": "tools.prefix_cache",
    "hf": "inspect_ai.model._providers.hf",
    "vllm": "inspect_ai.model._providers.vllm",
}


def module_files(name: str) -> list[Path]:
    """The source files of a module, or of every module in a package (found without importing it)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise GuardViolation(f"evaluation module {name} not found")
    if spec.submodule_search_locations:  # a package: all of it
        return sorted(p.resolve() for loc in spec.submodule_search_locations for p in Path(loc).rglob("*.py"))
    return [Path(spec.origin).resolve()]


def eval_code_files(provider: str, task_modules: Iterable[str]) -> list[Path]:
    names = (*COMMON_EVAL_MODULES, *task_modules, PROVIDER_MODULES[provider])
    return sorted({f for name in names for f in module_files(name)})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_eval_checksums(ws: Workspace, provider: str, task_modules: Iterable[str]) -> dict[str, str]:
    """Write the checksums of the evaluation code once per run (kept across --resume)."""
    if ws.eval_checksums.is_file():
        return json.loads(ws.eval_checksums.read_text())
    sums = {str(p): _sha256(p) for p in eval_code_files(provider, task_modules)}
    tmp = ws.eval_checksums.with_suffix(".tmp")
    tmp.write_text(json.dumps(sums, indent=2))
    tmp.replace(ws.eval_checksums)
    return sums


def verify_eval_checksums(ws: Workspace) -> None:
    """Refuse to evaluate if any checksummed evaluation file changed since the run started."""
    if not ws.eval_checksums.is_file():
        raise GuardViolation(f"{ws.eval_checksums} is missing: the evaluation code cannot be verified (restore the "
                             "file from a backup, or start a new run)")
    try:
        sums = json.loads(ws.eval_checksums.read_text())
    except (ValueError, UnicodeDecodeError):
        raise GuardViolation(f"{ws.eval_checksums} is not the checksum file this run wrote") from None
    if not isinstance(sums, dict) or not sums:
        raise GuardViolation(f"{ws.eval_checksums} is not the checksum file this run wrote")
    for path, digest in sums.items():
        p = Path(path)
        if not p.is_file():
            raise GuardViolation(f"evaluation file removed since the run started: {path}")
        if _sha256(p) != digest:
            raise GuardViolation(f"evaluation file modified since the run started: {path}")


def check_start_checkpoint(start: str, base_model: str, ws: Workspace) -> list[str]:
    """The lineage of a training start point; anything but the base model or this workspace's own checkpoints
    (which descend from it) is refused."""
    if start == base_model:
        return [base_model]
    path = Path(start)
    if not path.is_dir() or not ws.is_own_checkpoint(path):
        raise GuardViolation(f"refusing to train from {start}: only the base model ({base_model}) or checkpoints "
                             f"this workspace produced are allowed")
    lineage_file = path / LINEAGE_FILE
    if not lineage_file.is_file():
        raise GuardViolation(f"refusing to train from {start}: it has no {LINEAGE_FILE} recording its origin")
    lineage = json.loads(lineage_file.read_text())
    if not lineage or lineage[0] != base_model:
        raise GuardViolation(f"refusing to train from {start}: its lineage starts at {lineage[:1]}, not {base_model}")
    return [*lineage, str(path)]


def write_lineage(model_dir: Path, lineage: list[str]) -> None:
    (model_dir / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2))


def child_env(**extra: str) -> dict[str, str]:
    """Environment for training and evaluation subprocesses: inherits CUDA_VISIBLE_DEVICES untouched."""
    env = dict(os.environ)
    env.update(extra)
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def record_problems(files: list[Path]) -> list[str]:
    """Files of installed distributions (inspect-ai, inspect-evals, ...) whose content no longer matches the hash
    their own wheel recorded (`*.dist-info/RECORD`): an edit made at any time since the install, before the run
    started included. Files no installed distribution records (this project's own) are left to the run-start
    checksums."""
    import base64
    from importlib.metadata import distribution, packages_distributions

    wanted = {f.resolve() for f in files}
    owners = packages_distributions()
    tops = {part for f in wanted for part in f.parts}  # a file's top-level package is one of its path parts
    names = {name for top in tops & set(owners) for name in owners[top]}
    recorded: dict[Path, tuple[str, str]] = {}
    for dist in map(distribution, sorted(names)):
        for entry in dist.files or []:
            if entry.hash is None or entry.hash.mode != "sha256" or not str(entry).endswith(".py"):
                continue
            path = Path(str(dist.locate_file(entry))).resolve()
            if path in wanted:
                recorded[path] = (dist.metadata["Name"], entry.hash.value)
    problems = []
    for path in sorted(recorded):
        name, expected = recorded[path]
        actual = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
        if actual != expected:
            problems.append(f"{path} differs from the file {name} installed (its RECORD hash)")
    return problems


def verify_pristine(files: list[Path]) -> None:
    """Refuse a final evaluation whose installed evaluation code is not the code its distributions shipped."""
    problems = record_problems(files)
    if problems:
        raise GuardViolation(f"the evaluation code is not pristine: {problems[0]}"
                             + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                             + "; reinstall it (bash install.sh) before the final evaluation")
