"""Shared experiment memory (chromadb + the bundled MiniLM embedder); see `memory.store`.

The names below are re-exported lazily: importing `memory` stays instant, and chromadb (seconds to import) loads
only when a name is first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExperimentMemory", "MemoryEntry", "MemoryHit", "MemoryKind", "KINDS"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from memory import store

        return getattr(store, name)
    raise AttributeError(f"module 'memory' has no attribute {name!r}")
