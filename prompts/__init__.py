"""The roles' system prompts: Markdown files in this package, rendered by Jinja2 with StrictUndefined, so a
missing variable is an error instead of a silently empty string."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Environment

PROMPTS_DIR = Path(__file__).resolve().parent


def names() -> list[str]:
    """The prompts this package holds (files starting with "_" are partials, included by the others)."""
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.md") if not p.stem.startswith("_"))


def render(name: str, **variables: Any) -> str:
    """Render `<name>.md` with `variables`; an unknown name or a missing variable raises."""
    return _environment().get_template(f"{name}.md").render(**variables).strip() + "\n"


@lru_cache(maxsize=1)
def _environment() -> Environment:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    # No autoescape: these are prompts, not HTML. trim_blocks keeps {% %} lines from leaving blank lines.
    return Environment(loader=FileSystemLoader(PROMPTS_DIR), undefined=StrictUndefined, autoescape=False,
                       trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
