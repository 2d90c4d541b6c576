"""The one error hierarchy. Every expected failure is a `PosttrainError`; it carries its exit code and whether the
run can be continued with --resume, so the CLI catches the base once and prints one line.

Three kinds, as the roles see them:
- recoverable (`Recoverable`): goes back to whoever can fix it, as a message: a misused tool to the agent, a bad
  source to the data engineer, a failed training run to the log and the next plan;
- a stop (`Stop` and its kinds): the run ends cleanly with its state saved, and the message says why;
- anything else is a bug and raises with its traceback.

Messages pass through the redactor when the error is made, so no key reaches stderr, a log or a checkpoint.
"""

from __future__ import annotations

from core.redact import redact

EXIT_OK = 0
EXIT_BUG = 1
EXIT_INPUT = 2
EXIT_GUARD = 3
EXIT_HANDOFF = 4
EXIT_LIMIT = 5
EXIT_TOOL = 6
EXIT_CODES = {
    EXIT_OK: "the run stopped at its target, budget or iteration cap",
    EXIT_BUG: "an unexpected error (a bug): the traceback is printed; the state up to the last node is saved",
    EXIT_INPUT: "bad input (flag, file, data, model) or a backbone that cannot serve the run",
    EXIT_GUARD: "a hard rule stopped the run (evaluation code changed, a foreign checkpoint, a rule-breaking decision)",
    EXIT_HANDOFF: "a role gave no valid handoff within its limits",
    EXIT_LIMIT: "a limit set for the run was spent (LLM tokens, backbone retries)",
    EXIT_TOOL: "a tool the run depends on failed (training recipe, export, evaluation)",
}


class PosttrainError(Exception):
    """Base of every expected failure."""

    exit_code = EXIT_BUG
    resumable = False
    """Whether `--resume` can continue the run once the cause is fixed (when the run was saved at all)."""
    prefix = "error"

    def __init__(self, message: str, *args: object):
        super().__init__(redact(str(message)), *args)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def headline(self) -> str:
        """The one line the CLI prints."""
        return f"{self.prefix}: {' '.join(self.message.split())}"


# ------------------------------------------------------------------------------------------------- recoverable


class Recoverable(PosttrainError):
    """A failure that goes back to whoever can act on it, as a message; it never ends a run by itself."""


class ToolError(Recoverable):
    """A tool misused by an agent (unknown source, missing input): returned to the agent as a tool message."""


class InvalidHandoff(Recoverable, ValueError):
    """A handoff that parses but breaks a role rule; its problems go back to the model."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = [redact(p) for p in problems]


class SourceError(Recoverable, ValueError):
    """A data source that cannot be read; the data engineer gets it back and may pick another."""


class TrainingFailed(Recoverable):
    """LlamaFactory exited non-zero (or timed out); the iteration is logged as failed with the log's tail."""

    def __init__(self, message: str, returncode: int | None, log_tail: list[str], log_path: object):
        super().__init__(f"{message} (log: {log_path})\n" + "\n".join(log_tail))
        self.returncode, self.log_tail, self.log_path = returncode, [redact(x) for x in log_tail], log_path
        self.summary = redact(message)


# ------------------------------------------------------------------------------------------------------ stops


class Stop(PosttrainError):
    """The run stops here with its state saved."""

    resumable = True


class InputError(Stop, ValueError):
    """Bad user input (unknown task, missing path, malformed data or config): one line, exit code 2."""

    exit_code = EXIT_INPUT
    resumable = False


class WorkspaceBusy(InputError):
    """Another live process holds the workspace's lock."""


class EvalRefused(InputError):
    """An evaluation that would break the protocol (fewer samples than the floor, more than the benchmark has)."""


class BackboneError(Stop):
    """A backbone that cannot serve the run: refused key, unknown model, refused request, broken local server."""

    exit_code = EXIT_INPUT
    hint = "once the backbone answers, "


class BackboneUnreachable(BackboneError):
    """No server answers where the spec points, or it stopped answering beyond the retry budget."""


class GuardViolation(Stop):
    """A hard rule was broken. The message says what and where."""

    exit_code = EXIT_GUARD
    prefix = "stopped by a hard rule"
    hint = "after fixing it, "


class HandoffFailed(Stop):
    """A role produced no valid handoff within its limits."""

    exit_code = EXIT_HANDOFF
    prefix = "stopped"

    def __init__(self, role: str, reason: str):
        super().__init__(f"the {role} gave no valid handoff ({reason})")
        self.role, self.reason = role, redact(reason)


class LimitReached(Stop):
    """A limit the user set for the run (LLM tokens, backbone retries) is spent."""

    exit_code = EXIT_LIMIT
    prefix = "stopped"
    hint = "after raising the limit, "


class ToolFailed(Stop):
    """A tool the run depends on failed in a way no role can fix (a recipe the installed trainer rejects, an
    export that cannot be made loadable, an evaluation that did not finish)."""

    exit_code = EXIT_TOOL
    hint = "after fixing it, "


class TrainConfigError(ToolFailed, ValueError):
    """A training config the installed LlamaFactory/transformers would reject (unknown keys, bad values)."""


class DatasetFormatError(ToolFailed, ValueError):
    """Records that break the dataset contract (missing end-of-turn, longer than cutoff_len, ...)."""


class ExportError(ToolFailed):
    """The trained folder cannot be made into a clean, loadable HF model."""


class EvalFailed(ToolFailed):
    """The evaluation did not finish (inspect reported an error, or every attempt of the protocol failed)."""


def resume_hint(error: PosttrainError, workspace: object) -> str:
    """The second line after a resumable stop: how to continue."""
    when = getattr(error, "hint", "")
    return f"the state is saved; {when}continue with python -m graph.run --resume {workspace}"
