"""Every expected failure ends the CLI with its documented exit code, one line and no traceback, plus the resume
hint where the run is saved; the hierarchy carries both facts, and messages are redacted when made."""

from __future__ import annotations

import pytest

import graph.run as cli
from core import errors
from core.errors import (
    EXIT_CODES,
    BackboneError,
    EvalFailed,
    GuardViolation,
    HandoffFailed,
    InputError,
    LimitReached,
    PosttrainError,
    TrainConfigError,
)

CASES = [
    (InputError("data dir not found: /x"), 2, False),
    (BackboneError("backbone openai:m refused the API key (HTTP 401)"), 2, True),
    (GuardViolation("evaluation file modified since the run started: /x.py"), 3, True),
    (HandoffFailed("planner", "4 invalid handoffs"), 4, True),
    (LimitReached("the run's LLM token budget is spent"), 5, True),
    (TrainConfigError("unknown train argument(s) warmup_ratio"), 6, True),
    (EvalFailed("evaluation did not finish"), 6, True),
]


def test_every_exit_code_is_documented():
    codes = {
        cls.exit_code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, PosttrainError)
    }
    assert codes <= set(EXIT_CODES)


@pytest.mark.parametrize("error,code,resumable", CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_the_cli_maps_each_error(error, code, resumable, tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"

    def execute(settings, **_):
        settings.save()  # the run was saved before it failed
        raise error

    monkeypatch.setattr(cli, "execute", execute)
    assert cli.main(["--workspace", str(ws)]) == code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "Traceback" not in "\n".join(err)
    assert err[0] == error.headline()
    if resumable:
        assert err[1].startswith("the state is saved;") and err[1].endswith(f"--resume {ws}") and len(err) == 2
    else:
        assert len(err) == 1


def test_an_error_before_anything_is_saved_gives_no_resume_hint(tmp_path, monkeypatch, capsys):
    def execute(settings, **_):
        raise BackboneError("no OpenAI-compatible server answers")

    monkeypatch.setattr(cli, "execute", execute)
    assert cli.main(["--workspace", str(tmp_path / "ws")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_bug_prints_a_redacted_traceback_and_exit_1(tmp_path, monkeypatch, capsys):
    def execute(settings, **_):
        raise RuntimeError("boom with Bearer sk-abcdefghijklmnop1234 inside")

    monkeypatch.setattr(cli, "execute", execute)
    assert cli.main(["--workspace", str(tmp_path / "ws")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "sk-abcdefghijklmnop1234" not in err and "[redacted]" in err


def test_messages_are_redacted_when_the_error_is_made(monkeypatch):
    monkeypatch.setenv("SOME_API_KEY", "verysecretvalue42")
    e = BackboneError("HTTP 400: echo {'authorization': 'Bearer verysecretvalue42', 'key': 'sk-proj-AbCdEf123456789'}")
    assert "verysecretvalue42" not in e.headline() and "sk-proj-AbCdEf123456789" not in str(e)
    assert e.headline().count("[redacted]") == 2


def test_argparse_errors_are_one_line_with_a_hint(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--hours"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: argument --hours") and "--help" in err[0]
