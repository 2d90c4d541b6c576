"""The run's state, as the graph holds it (defined in `core.state`; the handoffs in `core.handoffs`).

This module is also the path that checkpoints written before the core layer existed name their types by
(`graph.state.EvalReport`, ...): the checkpoint serializer rebuilds them from here, so those runs still resume.
"""

from __future__ import annotations

from core.handoffs import (  # noqa: F401  (re-exported: old checkpoints name these classes by this module)
    Best,
    Check,
    DataKnobs,
    DataSelection,
    DatasetManifest,
    EvalReport,
    FailureMode,
    IterationPlan,
    IterationRecord,
    LogEntry,
    OpCount,
    SourceChoice,
    Stage,
    TrainKnobs,
    TrainResult,
    ValidationVerdict,
)
from core.state import ITERATION_FIELDS, InputState, RunState  # noqa: F401

LEGACY_MODULE = __name__
