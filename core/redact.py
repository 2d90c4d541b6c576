"""One redactor for every text that leaves the process: errors, progress lines, traces and checkpoint writes.

It removes the values of the secret-looking environment variables (keys, tokens, passwords) and anything shaped
like a bearer token or an API key, whatever words surround it: a server that echoes the request back in its error
body must not put the key on stderr or in `checkpoints.sqlite`.
"""

from __future__ import annotations

import os
import re

REDACTED = "[redacted]"
SECRET_NAME = re.compile(r"API_KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.I)
MIN_SECRET_LEN = 6
"""Shorter values ("none", "1") are placeholders, not secrets, and would redact ordinary words."""
_SHAPES = re.compile(
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{6,}"  # an Authorization header's value
    r"|\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}"  # OpenAI-style keys (sk-..., sk-proj-...)
    r"|\blsv2_[A-Za-z0-9_]{8,}"  # LangSmith keys
    r"|\b(?:hf|gh[pousr])_[A-Za-z0-9]{16,}"  # hub and GitHub tokens
    r"|(?<=[?&]key=)[^&\s\"']{6,}|(?<=[?&]token=)[^&\s\"']{6,}"  # keys passed in a query string
)
_extra: set[str] = set()


def register_secret(value: str | None) -> None:
    """Also redact `value` wherever it appears (a key read from a file or given programmatically)."""
    if value and len(value) >= MIN_SECRET_LEN:
        _extra.add(value)


def secret_values() -> list[str]:
    """The secrets known now, longest first (so a key that contains another is removed whole)."""
    values = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LEN} | _extra
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every known secret and every key-shaped string replaced by [redacted]."""
    if not text:
        return text
    for value in secret_values():
        if value in text:
            text = text.replace(value, REDACTED)
    return _SHAPES.sub(REDACTED, text)


def redact_exception(exc: BaseException) -> BaseException:
    """Redact an exception's string arguments in place (what a checkpoint write stores of a failed node)."""
    exc.args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
    return exc
