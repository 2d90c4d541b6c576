"""The final evaluation's pristine check: an installed distribution's file edited after the install (before the run
started, say) is refused, against the hash the distribution's own RECORD holds."""

from __future__ import annotations

import base64
import hashlib
import importlib
import sys

import pytest

from core.errors import GuardViolation
from tools.guards import module_files, record_problems, verify_pristine


def install(site, name: str, files: dict[str, str]) -> None:
    """A distribution laid out as a wheel installs one: the package and its dist-info with a RECORD."""
    rows = []
    for rel, text in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        rows.append(f"{rel},sha256={digest},{len(text.encode())}")
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text("\n".join(rows + [f"{name}-1.0.dist-info/RECORD,,"]) + "\n")


def test_an_installed_file_edited_before_the_run_is_refused(tmp_path, monkeypatch):
    site = tmp_path / "site"
    install(site, "evalpkg", {"evalpkg/__init__.py": "", "evalpkg/scorer.py": "THRESHOLD = 1\n"})
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    files = module_files("evalpkg")
    assert record_problems(files) == []
    verify_pristine(files)
    (site / "evalpkg" / "scorer.py").write_text("THRESHOLD = 0  # 'fixed'\n")
    assert record_problems(files) == [f"{site / 'evalpkg' / 'scorer.py'} differs from the file evalpkg installed "
                                      "(its RECORD hash)"]
    with pytest.raises(GuardViolation, match="not pristine: .*scorer.py differs"):
        verify_pristine(files)
    sys.modules.pop("evalpkg", None)


def test_the_installed_inspect_code_is_pristine_here():
    from tools.guards import eval_code_files

    assert record_problems(eval_code_files("hf", ("inspect_evals.gsm8k",))) == []
