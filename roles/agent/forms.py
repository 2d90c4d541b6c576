"""Handoff forms: bounded views of the typed handoffs (enums, ranges, lengths) that a small model can fill under a
grammar, with the current values as defaults. Field descriptions come from the handoffs' own docstrings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from copy import copy
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core import sources
from core.handoffs import DataKnobs, IterationPlan, TrainKnobs

Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Long = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=800)]
_FORM = ConfigDict(extra="forbid")

TRAIN_GRID: dict[str, list[float]] = {
    "learning_rate": [5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4],
    "epochs": [0.5, 1.0, 2.0, 3.0],
    "batch_size": [1, 2, 4, 8, 16, 32],
    "cutoff_len": [256, 384, 512, 1024, 2048, 4096],
}
"""The values a model that decides without exploring may pick: a grammar keeps it inside an enum, where it cannot
keep a float inside a range (measured: SmolLM2 wrote learning rates above 1e-3 under the range-only schema)."""

MAX_SOURCES = 3
"""Sources a plan or a selection names at most."""

Options = Mapping[str, tuple[bool, str]]
"""A benchmark's construction switches: name → (default, description)."""
NO_OPTIONS: Options = MappingProxyType({})


def _fields(model: type[BaseModel], current: BaseModel | None = None, *, exclude: tuple[str, ...] = (),
            caps: dict[str, int] | None = None, floors: dict[str, int] | None = None,
            grid: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """`model`'s fields, constraints and descriptions kept, `current` values as defaults, and extra upper caps and
    lower floors (so the schema itself states the bound, and pydantic enforces it). `grid` turns the named fields
    into enums of those values (within the floors, and always with the current value) in the schema."""
    import annotated_types

    out = {}
    for name, info in model.model_fields.items():
        if name in exclude:
            continue
        new = copy(info)
        new.metadata = list(info.metadata)
        if current is not None:
            new.default, new.default_factory = getattr(current, name), None
        if caps and name in caps:
            new.metadata.append(annotated_types.Le(caps[name]))
            if isinstance(new.default, int) and new.default > caps[name]:
                new.default = caps[name]
        if floors and name in floors:
            new.metadata.append(annotated_types.Ge(floors[name]))
        if grid and name in grid:
            low = (floors or {}).get(name, float("-inf"))
            values = sorted({v for v in grid[name] if v >= low} | {new.default})
            new.json_schema_extra = {"enum": values}
        out[name] = (info.annotation, new)
    return out


def source_names(planned: Sequence[str], grid: bool) -> dict[str, Any]:
    """Schema for a source name: with `grid`, one of these sources or the benchmark's train split (a model that
    never explores cannot know which files exist; measured: SmolLM2 named an invented local file); else the
    grammar's pattern. Schema only: the rules decide."""
    return {"enum": sorted({sources.BENCHMARK_TRAIN, *planned})} if grid else {"pattern": sources.PATTERN}


def model(model_name: str, doc: str, /, **fields: Any) -> type[BaseModel]:
    from pydantic import create_model

    return create_model(model_name, __config__=_FORM, __doc__=doc, **fields)


def _options_form(options: Options, current: Mapping[str, bool]) -> type[BaseModel]:
    return model("DataOptions", "The benchmark's own construction switches.",
                 **{name: (bool, Field(current.get(name, default), description=doc))
                    for name, (default, doc) in options.items()})


def _data_form(name: str, doc: str, knobs: DataKnobs | None, options: Options, **kw: Any) -> type[BaseModel]:
    fields = _fields(DataKnobs, knobs, exclude=("options", *kw.pop("exclude", ())), **kw)
    if options:
        opts = _options_form(options, knobs.options if knobs else {})
        fields["options"] = (
            opts,
            Field(default_factory=opts, description=DataKnobs.model_fields["options"].description),
        )
    return model(name, doc, **fields)


def data_knobs(form_value: BaseModel, **extra: Any) -> DataKnobs:
    """A filled data form back as DataKnobs (its options sub-form as a plain mapping)."""
    fields = form_value.model_dump()
    return DataKnobs(**{**fields, **extra})


SAMPLING_FIELDS = ("questions", "samples", "sample_temperature")
GENERATION_FIELDS = ("augment", "synthesize")


def plan_form(last: IterationPlan | None, cap: int, options: Options = NO_OPTIONS, *, grid: bool = False,
              methods: Sequence[str] = ("sft",), can_generate: bool = False) -> type[BaseModel]:
    """`grid`: for models that decide without exploring, sources and training knobs come from enums. Only the
    methods and data operations this run can carry out are in the form."""
    import annotated_types

    hidden = (() if len(methods) > 1 else SAMPLING_FIELDS) + (() if can_generate else GENERATION_FIELDS)
    data = _data_form(
        "PlanData",
        "What the plan asks of the data engineer.",
        last.data if last else None,
        options,
        caps={"max_rows": cap},
        exclude=hidden + (("mixture",) if grid else ()),  # a free-form mapping is hard under a grammar
    )
    data.model_fields["sources"].json_schema_extra = {
        "items": {"type": "string", **source_names(last.data.sources if last else [], grid)}
    }
    # Bounded like every form list: under greedy decoding an unbounded list can repeat one item until max_tokens.
    data.model_fields["sources"].metadata.append(annotated_types.MaxLen(MAX_SOURCES))
    data.model_rebuild(force=True)
    train = model(
        "PlanTrain",
        "What the plan asks of the trainer.",
        **_fields(TrainKnobs, last.train if last else TrainKnobs(), grid=TRAIN_GRID if grid else None),
    )
    doc = IterationPlan.model_fields
    return model(
        "PlanForm",
        "Hand off this iteration's plan. Call once, when the plan is decided.",
        problems=(list[Short], Field(min_length=1, max_length=3, description=doc["problems"].description)),
        objective=(Short, Field(description=doc["objective"].description)),
        changes=(list[Short], Field(min_length=1, max_length=4, description=doc["changes"].description)),
        change_kind=(Literal["data", "training", "both"], Field(description=doc["change_kind"].description)),
        method=(Literal[tuple(methods)], Field(last.method if last and last.method in methods else "sft",
                                               description=doc["method"].description)),
        success_criterion=(Short, Field(description=doc["success_criterion"].description)),
        references=(
            list[Short],
            Field(default_factory=list, max_length=3, description="Memory entries relied on, by id."),
        ),
        data=(data, Field(default_factory=data)),
        train=(train, Field(default_factory=train)),
    )


def selection_form(cap: int, planned: Sequence[str] = (), *, grid: bool = False) -> type[BaseModel]:
    """`grid`: source names only from the plan's sources and the benchmark's train split."""
    from core.handoffs import DataSelection, SourceChoice

    doc, sdoc = DataSelection.model_fields, SourceChoice.model_fields
    source = model(
        "SourceForm",
        "One data source.",
        name=(Short, Field(description=sdoc["name"].description, json_schema_extra=source_names(planned, grid))),
        reason=(Short, Field(description=sdoc["reason"].description)),
        max_rows=(int, Field(min(cap, 256), ge=1, le=cap, description=sdoc["max_rows"].description)),
    )
    return model(
        "SelectionForm",
        "Hand off the data selection. Call once, when the sources are chosen.",
        target_behaviours=(
            list[Short],
            Field(min_length=1, max_length=4, description=doc["target_behaviours"].description),
        ),
        sources=(list[source], Field(min_length=1, max_length=MAX_SOURCES, description=doc["sources"].description)),
        risks=(list[Short], Field(min_length=1, max_length=4, description=doc["risks"].description)),
    )


def construction_form(knobs: DataKnobs, options: Options = NO_OPTIONS) -> type[BaseModel]:
    build = _data_form(
        "BuildKnobs",
        "Construction knobs (the selection fixes the sources).",
        knobs,
        options,
        exclude=("sources", "mixture", *SAMPLING_FIELDS, *GENERATION_FIELDS),  # the plan's decisions
        caps={"max_rows": knobs.max_rows},
    )
    return model(
        "ConstructionForm",
        "Hand off the construction request. Call once, when the knobs are set.",
        knobs=(build, Field(default_factory=build)),
        note=(Short, Field(description="What changed from the plan's knobs, and why.")),
    )


class VerdictForm(BaseModel):
    """Hand off the validation verdict. Call once, when decided; the measured checks are attached for you."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    decision: Literal["approve", "back_to_construction", "back_to_selection"]
    """approve only when every check passed."""
    reasons: list[Short] = Field(min_length=1, max_length=4)
    """One reason per problem, naming the check and its detail."""


def train_form(planned: TrainKnobs, *, grid: bool = False) -> type[BaseModel]:
    return model(
        "TrainForm",
        "Hand off the training knobs. Call once, when they are set.",
        **_fields(TrainKnobs, planned, floors={"cutoff_len": planned.cutoff_len}, grid=TRAIN_GRID if grid else None),
    )


class AnalysisForm(BaseModel):
    """Hand off the log entry's analysis and next action. Call once, when written."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    analysis: Long
    """Result vs the best before, whether the hypothesis held, the likely cause."""
    next_action: Short
    """The one next step that follows from the analysis."""
