"""LLM roles, driven by a scripted chat model (the only fake) through the real tools, data and validation.

Every `AgentPolicy` method hands off a valid typed object; rejected handoffs are asked for again and then fail
cleanly; tool misuse comes back as a ToolMessage; backbones that do not answer fail fast; keys never show.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import eval_report_stub
from fakes import ScriptedChatModel, call, scripted, tool_results
from langchain_core.messages import AIMessage, ToolMessage

from core.errors import HandoffFailed
from core.handoffs import (
    Best,
    Check,
    DataKnobs,
    DataSelection,
    Evidence,
    FailureMode,
    IterationPlan,
    SourceChoice,
    Stage,
    TrainKnobs,
    ValidationVerdict,
)
from roles.agent.policy import AgentPolicy
from roles.llm import Backbone

# ---------------------------------------------------------------------------------------------------------------
# Real inputs: a run context, evidence, datasets built and validated by the real tools


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, data_dir, tiny_model_dir):
    from core.settings import RunSettings
    from graph.run import build_context

    settings = RunSettings(task="gsm8k", workspace=tmp_path_factory.mktemp("agents") / "ws", data_dir=data_dir,
                           base_model=str(tiny_model_dir), device="cpu")
    settings.save()
    return build_context(settings)


def evidence(ctx, **overrides) -> Evidence:
    base = eval_report_stub(0.02).model_copy(update={"failure_modes": [
        FailureMode(label="no answer line", category="inference_template", count=50,
                    examples=["The answer is 18 dollars."]),
        FailureMode(label="wrong final number", category="data", count=14, examples=["#### 17"])]})
    from roles.budget import affordable_rows

    fields = dict(iteration=1, stage=Stage.LOCAL, on_gpu=False, budget_left_s=2700.0, baseline=base,
                  best=Best(model_dir=ctx.base_model, score=0.02, iteration=0), last_eval=None, history=[],
                  last_train=None, last_plan=None, memory_hits=[], task_description=ctx.task.description,
                  answer_format=ctx.task.answer_line_hint)
    fields = {**fields, **overrides}
    cap = affordable_rows(budget_left_s=fields["budget_left_s"], last_eval=fields["last_eval"] or base,
                          last_train=fields["last_train"], last_plan=fields["last_plan"],
                          default_cutoff=ctx.task.train_cutoff, on_gpu=False)
    return Evidence(**{"affordable_rows": cap, **fields})


def a_plan(**data) -> IterationPlan:
    return IterationPlan(iteration=1, stage=Stage.LOCAL, problems=["no answer line (50 of 66)"],
                         objective="teach the answer line", changes=["SFT on train rows"], change_kind="both",
                         success_criterion="accuracy above 0.02", data=DataKnobs(**data),
                         train=TrainKnobs(cutoff_len=1024))


def build_and_validate(ctx, out: Path, source: str, max_rows: int, exclude: set[str] = frozenset()):
    """A dataset built and validated by the real data tools: (manifest, findings)."""
    from tools.data import construct
    from tools.validate import validate

    manifest = construct(ctx.task, ctx.base_model, [SourceChoice(name=source, reason="test", max_rows=max_rows)],
                         DataKnobs(max_rows=max_rows), out, cutoff_len=1024, exclude_ids=set(exclude), attempt=1)
    return manifest, validate(ctx.task, manifest, ctx.base_model, cutoff_len=1024, index=ctx.test_index())


def leaked_source(ctx, data_dir: Path, path: Path, n_leaked: int = 4) -> tuple[Path, set[str]]:
    """A local JSONL of clean train rows with `n_leaked` test rows copied in, and the leaked test ids."""
    from inspect_evals.utils import create_stable_id

    index = ctx.test_index()
    rows = [json.loads(x) for x in (data_dir / "gsm8k" / "train.jsonl").read_text().splitlines()[:200]]
    clean = [r for r in rows if not index.hits(r["question"] + "\n" + r["answer"])][:30]
    leaked = [json.loads(x) for x in (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:n_leaked]]
    path.write_text("".join(json.dumps(r) + "\n" for r in clean[:15] + leaked + clean[15:]))
    return path, {create_stable_id(r["question"], prefix="gsm8k") for r in leaked}


@pytest.fixture(scope="module")
def contaminated(ctx, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("contaminated")
    source, leaked = leaked_source(ctx, data_dir, out / "mixed.jsonl")
    manifest, findings = build_and_validate(ctx, out / "data", f"local:{source}", max_rows=40)
    assert not findings.check("decontamination").passed
    return manifest, findings, leaked


@pytest.fixture(scope="module")
def clean(ctx, tmp_path_factory):
    manifest, findings = build_and_validate(ctx, tmp_path_factory.mktemp("clean"), "benchmark_train", max_rows=16)
    assert all(c.passed for c in findings.checks), findings.checks
    return manifest, findings


# ---------------------------------------------------------------------------------------------------------------
# Every role, through its real tools


def test_planner_reads_memory_and_budget_and_is_re_asked_after_an_invalid_plan(ctx):
    ctx.memory.add("log_entry", "earlier-run/log/1", "Iteration 1: SFT on 160 train rows rewritten to the answer "
                   "line lifted accuracy from 0.02 to 0.09; no-answer-line failures fell from 50 to 12",
                   {"task": ctx.task.name, "iteration": 1, "role": "logger"})
    plan = dict(problems=["no answer line in 50 of 66 samples"], objective="teach the evaluation's answer line",
                changes=["SFT on train rows rewritten to the answer line"], change_kind="both",
                success_criterion="accuracy above 0.02", references=["earlier-run/log/1"],
                data={"max_rows": 100_000}, train={"learning_rate": 5e-5})
    policy, model = scripted(
        "planner", ctx,
        call("search_memory", query="answer line failures", k=3),
        call("read_last_eval"),
        call("estimate_budget"),
        call("handoff", **plan),  # more rows than the budget affords: rejected
        call("handoff", **{**plan, "data": {"max_rows": 160}}))

    result = policy.plan(evidence(ctx))

    assert isinstance(result, IterationPlan)
    assert (result.iteration, result.stage) == (1, Stage.LOCAL)  # facts from the evidence, not the model
    assert result.data.max_rows == 160 and result.train.learning_rate == 5e-5
    assert result.references == ["earlier-run/log/1"]
    seen = tool_results(model)
    assert "earlier-run/log/1" in seen["search_memory"][0].text
    assert "no answer line" in seen["read_last_eval"][0].text
    cap = json.loads(seen["estimate_budget"][0].text)["max_affordable_rows"]
    assert 160 <= cap < 100_000
    rejection = seen["handoff"][0]
    assert rejection.status == "error" and "data.max_rows" in rejection.text and "tries left" in rejection.text
    assert model.requests[0]["tools"] == ["search_memory", "read_last_eval", "read_history", "estimate_budget",
                                          "handoff"]
    assert model.requests[0]["tool_choice"] is None  # free to explore
    system = model.requests[0]["messages"][0].text
    assert "planner" in system and "gsm8k" in system.lower() and "`estimate_budget`" in system


def test_selection_gets_tool_errors_back_as_messages_and_hands_off(ctx, tmp_path):
    policy, model = scripted(
        "data_selection", ctx,
        call("read_plan"),
        call("list_sources"),
        call("inspect_source", name=f"local:{tmp_path}/missing.jsonl"),  # a recoverable misuse
        call("inspect_source", name="openai:gpt-4o"),  # a hard rule, refused as a message too
        call("inspect_source", name="benchmark_train", n=2),
        call("handoff", target_behaviours=["end every answer with the answer line"],
             sources=[{"name": "benchmark_train", "reason": "in-distribution worked solutions", "max_rows": 64}],
             risks=["test leakage: decontamination excludes it"]))

    result = policy.select(a_plan(max_rows=64), None)

    assert result == DataSelection(target_behaviours=["end every answer with the answer line"],
                                   sources=[SourceChoice(name="benchmark_train", reason="in-distribution worked "
                                                         "solutions", max_rows=64)],
                                   risks=["test leakage: decontamination excludes it"])
    seen = tool_results(model)
    missing, refused, ok = seen["inspect_source"]
    assert missing.status == "error" and "not found" in missing.text
    assert refused.status == "error" and "remote model APIs" in refused.text
    assert json.loads(ok.text)["rows"] > 1000 and "teach the answer line" in seen["read_plan"][0].text


def test_selection_refuses_remote_api_sources_in_the_handoff(ctx):
    bad = dict(target_behaviours=["answer line"], risks=["none"],
               sources=[{"name": "https://api.example.com/v1", "reason": "distill", "max_rows": 10}])
    good = {**bad, "sources": [{"name": "benchmark_train", "reason": "in distribution", "max_rows": 10}]}
    policy, model = scripted("data_selection", ctx, call("handoff", **bad), call("handoff", **good))
    assert policy.select(a_plan(max_rows=10), None).sources[0].name == "benchmark_train"
    assert "remote model APIs" in tool_results(model)["handoff"][0].text


def test_construction_previews_a_sample_and_leaves_exclusions_to_the_node(ctx):
    verdict = ValidationVerdict(decision="back_to_construction", reasons=["decontamination: 2 rows"],
                                checks=[Check(name="decontamination", passed=False, detail="2 rows share a 13-gram")],
                                contaminated_ids=["gsm8k_aaaa", "gsm8k_bbbb"])
    selection = DataSelection(target_behaviours=["answer line"], risks=["leakage"],
                              sources=[SourceChoice(name="benchmark_train", reason="in distribution", max_rows=24)])
    policy, model = scripted(
        "data_construction", ctx,
        call("read_last_verdict"),
        call("preview_rendered_sample", index=3, rewrite_answers=True),
        call("handoff", knobs={"max_rows": 24, "seed": 7}, note="rebuild without the contaminated rows"))

    request = policy.construction(a_plan(max_rows=24), selection, verdict)

    assert request.exclude_ids == []  # the construction node excludes them, whatever any policy says
    assert request.knobs == DataKnobs(sources=["benchmark_train"], max_rows=24, seed=7,
                                      options={"strip_annotations": True})  # the task's default, made explicit
    seen = tool_results(model)
    preview = json.loads(seen["preview_rendered_sample"][0].text)
    assert preview["response_has_answer_line"] and preview["evaluation_messages"]
    assert "gsm8k_aaaa" in seen["read_last_verdict"][0].text


def test_validation_cannot_approve_contaminated_data(ctx, contaminated):
    manifest, findings, leaked = contaminated
    policy, model = scripted(
        "data_validation", ctx,
        call("read_findings"),
        call("read_manifest"),
        call("handoff", decision="approve", reasons=["the rows look well formatted"]),  # rejected in code
        call("handoff", decision="back_to_construction",
             reasons=["decontamination: rows share 13-grams with test samples; exclude them"]))

    verdict = policy.judge(findings, manifest)

    assert verdict.decision == "back_to_construction"
    assert verdict.checks == findings.checks  # the measured checks, not the model's account of them
    assert set(verdict.contaminated_ids) == leaked
    seen = tool_results(model)
    assert not json.loads(seen["read_findings"][0].text)["checks"][-1]["passed"]
    assert "decontamination" in seen["handoff"][0].text and "not allowed" in seen["handoff"][0].text


def test_repeated_invalid_handoffs_fail_cleanly(ctx, contaminated):
    manifest, findings, _ = contaminated
    approve = call("handoff", decision="approve", reasons=["fine"])
    policy, model = scripted("data_validation", ctx, *[approve.model_copy(update={"tool_calls": [
        {**approve.tool_calls[0], "id": f"c{i}"}]}) for i in range(4)], max_invalid=3)
    with pytest.raises(HandoffFailed,
                       match=r"data_validation gave no valid handoff \(4 invalid handoffs.*decontamination"):
        policy.judge(findings, manifest)
    assert len(model.requests) == 4


def test_clean_data_is_approved_then_trained_then_logged(ctx, clean):
    manifest, findings = clean
    judge, _ = scripted(
        "data_validation",
        ctx,
        call("read_findings"),
        call("read_validation_report", max_chars=800),
        call("handoff", decision="approve", reasons=["all four checks pass on 16 rows"]),
    )
    verdict = judge.judge(findings, manifest)
    assert verdict.decision == "approve" and verdict.checks == findings.checks and verdict.contaminated_ids == []

    plan = a_plan(max_rows=16)
    trainer, model = scripted(
        "trainer",
        ctx,
        call("training_bounds"),
        call("propose_knobs", learning_rate=5e-5, epochs=2, batch_size=4, cutoff_len=256),
        call("handoff", learning_rate=5e-5, epochs=2, batch_size=4, cutoff_len=1024),
    )
    knobs = trainer.train_knobs(plan, manifest)
    assert knobs == TrainKnobs(learning_rate=5e-5, epochs=2, batch_size=4, cutoff_len=1024)
    seen = tool_results(model)
    assert json.loads(seen["training_bounds"][0].text)["bounds"]["cutoff_len"]["minimum"] == 1024
    assert seen["propose_knobs"][0].text.startswith("problems: cutoff_len 256")

    report = eval_report_stub(0.09).model_copy(
        update={
            "failure_modes": [FailureMode(label="wrong final number", category="data", count=40, examples=["#### 17"])]
        }
    )
    logger, model = scripted(
        "logger",
        ctx,
        call("read_eval_result"),
        call(
            "handoff",
            analysis="accuracy 0.09 vs best 0.02 (+0.07): the answer-line hypothesis held; wrong "
            "final numbers now dominate (40)",
            next_action="keep this checkpoint and double the worked solutions",
        ),
    )
    analysis, next_action = logger.analyse(plan, report, Best(model_dir="base", score=0.02, iteration=0), None)
    assert analysis.startswith("accuracy 0.09") and next_action.startswith("keep")
    assert json.loads(tool_results(model)["read_eval_result"][0].text)["delta"] == 0.07


def test_step_limit_forces_the_handoff_and_prose_is_nudged(ctx, clean):
    manifest, findings = clean
    policy, model = scripted(
        "data_validation",
        ctx,
        AIMessage("I think the data is fine."),
        call("read_findings"),
        call("handoff", decision="approve", reasons=["all checks pass"]),
        max_steps=3,
    )
    assert policy.judge(findings, manifest).decision == "approve"
    assert [r["tool_choice"] for r in model.requests] == [None, None, "handoff"]
    assert "Reply with a tool call" in model.requests[1]["messages"][-1].text


def test_malformed_handoff_json_is_asked_for_again(ctx, clean):
    manifest, findings = clean
    broken = AIMessage(
        "",
        invalid_tool_calls=[
            {
                "name": "handoff",
                "args": '{"decision": "appr',
                "id": "bad1",
                "error": "unterminated string",
                "type": "invalid_tool_call",
            }
        ],
    )
    policy, model = scripted(
        "data_validation", ctx, broken, call("handoff", decision="approve", reasons=["all checks pass"])
    )
    assert policy.judge(findings, manifest).decision == "approve"
    assert "not valid JSON" in tool_results(model)["handoff"][0].text


def test_local_style_backbones_only_ever_see_a_forced_handoff_in_plain_turns(ctx, clean):
    manifest, findings = clean
    model = ScriptedChatModel(
        replies=[
            call("handoff", decision="back_to_selection", reasons=["x"] * 5),
            call("handoff", decision="approve", reasons=["all checks pass"]),
        ]
    )
    policy = AgentPolicy(
        "data_validation", Backbone(spec="local", model=model, force_handoff=True, plain_tool_turns=True)
    )
    policy.attach(ctx)
    assert policy.judge(findings, manifest).decision == "approve"
    assert [r["tool_choice"] for r in model.requests] == ["handoff", "handoff"]
    assert model.requests[0]["tools"] == ["handoff"]
    replay = model.requests[1]["messages"]
    assert not any(isinstance(m, ToolMessage) or getattr(m, "tool_calls", None) for m in replay)
    assert "Handoff rejected" in replay[-1].text and "reasons" in replay[-1].text
    assert "## Findings" in replay[1].text and "decontamination: pass" in replay[1].text


def test_agent_decisions_run_as_nodes_of_the_checkpointed_graph(ctx):
    """Selection, construction and validation agents inside the compiled graph, up to the trainer edge."""
    from dataclasses import replace

    from langgraph.checkpoint.memory import InMemorySaver

    from graph.build import builder

    selection = call(
        "handoff",
        target_behaviours=["answer line"],
        risks=["leakage"],
        sources=[{"name": "benchmark_train", "reason": "in distribution", "max_rows": 16}],
    )
    agents = {
        "data_selection": scripted("data_selection", None, call("list_sources"), selection),
        "data_construction": scripted("data_construction", None, call("handoff", note="as planned")),
        "data_validation": scripted(
            "data_validation",
            None,
            call("read_findings"),
            call("handoff", decision="approve", reasons=["every check passes"]),
        ),
    }
    run_ctx = replace(ctx, policies={**ctx.policies, **{role: policy for role, (policy, _) in agents.items()}})
    for policy, _ in agents.values():
        policy.attach(run_ctx)
    graph = builder().compile(checkpointer=InMemorySaver(), interrupt_after=["data_validation"])
    config = {"configurable": {"thread_id": "agents"}}
    graph.update_state(
        config,
        {
            "stage": Stage.LOCAL,
            "iteration": 1,
            "plan": a_plan(max_rows=16),
            "baseline": eval_report_stub(),
            "data_rounds": 0,
            "spent_s": 0.0,
            "best": Best(model_dir=ctx.base_model, score=0.0, iteration=0),
        },
        as_node="planner",
    )

    graph.invoke(None, config, context=run_ctx)

    snap = graph.get_state(config)
    assert snap.next == ("trainer",) and snap.values["verdict"].decision == "approve"
    assert snap.values["manifest"].rows == 16
    assert all(not m.replies for _, m in agents.values())  # every scripted reply was used
    assert json.loads(tool_results(agents["data_validation"][1])["read_findings"][0].text)["usable_rows"] == 16


# ---------------------------------------------------------------------------------------------------------------
# Backbones: unreachable servers, keys, specs


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_backbone_fails_fast_and_without_the_key(monkeypatch):
    from roles.llm import BackboneUnreachable, load_backbone

    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", "sk-test-SECRET-0123456789")
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    t0 = time.monotonic()
    with pytest.raises(BackboneUnreachable, match=f"no OpenAI-compatible server answers at {url}") as err:
        load_backbone(f"openai-compatible:{url}#some-model")
    assert time.monotonic() - t0 < 30 and "SECRET" not in str(err.value)


def test_a_port_that_answers_but_is_no_openai_server_is_unreachable(tmp_path):
    """Another service (or an intercepting proxy) answering HTTP is not a backbone."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from roles.llm import BackboneUnreachable, load_backbone

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(BackboneUnreachable, match="HTTP 404, not a model list"):
            load_backbone(f"openai-compatible:http://127.0.0.1:{server.server_port}/v1#m")
    finally:
        server.shutdown()


def test_a_backbone_that_goes_away_mid_run_stops_the_decision_after_its_retries(monkeypatch, ctx, clean):
    from core.settings import RetrySettings, RunSettings
    from roles.llm import BackboneUnreachable, load_backbone

    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", "sk-test-SECRET-0123456789")
    settings = RunSettings(
        task="gsm8k",
        workspace=Path("/tmp/unused"),
        retry=RetrySettings(max_attempts=3, initial_wait_s=0.2, max_wait_s=0.5),
    )
    backbone = load_backbone(f"openai-compatible:http://127.0.0.1:{_closed_port()}/v1#m", settings, check=False)
    lines: list[str] = []
    policy = AgentPolicy("data_validation", backbone)
    policy._say = lines.append
    t0 = time.monotonic()
    with pytest.raises(BackboneUnreachable, match="stopped answering") as err:
        policy.judge(clean[1], clean[0])
    assert time.monotonic() - t0 < 30 and "SECRET" not in str(err.value)
    assert [line.split(";")[1].strip() for line in lines] == [
        "retry 1/2 in " + lines[0].split(" in ")[1],
        "retry 2/2 in " + lines[1].split(" in ")[1],
    ]


def test_keys_stay_out_of_reprs_dumps_and_settings(monkeypatch, tmp_path):
    from core.settings import RunSettings
    from core.specs import parse_spec
    from roles.llm import load_backbone

    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    spec = parse_spec("openai:gpt-4o-mini")
    assert spec.api_key.get_secret_value() == secret
    backbone = load_backbone("openai:gpt-4o-mini", check=False)
    settings = RunSettings(task="gsm8k", workspace=tmp_path, backbone="openai:gpt-4o-mini")
    settings.save()
    shown = [
        repr(spec),
        str(spec),
        spec.model_dump_json(),
        repr(backbone),
        repr(backbone.model),
        repr(AgentPolicy("planner", backbone)),
        (tmp_path / "run_settings.json").read_text(),
    ]
    assert not [s for s in shown if secret in s]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gpt-4o", "unknown backbone"),
        ("openai-compatible:localhost:8000#m", "expected openai-compatible:URL#MODEL"),
        ("openai-compatible:http://127.0.0.1:8000/v1", "expected openai-compatible:URL#MODEL"),
        ("openai:gpt-4o", r"needs an API key in \$OPENAI_API_KEY"),
    ],
)
def test_malformed_specs_are_input_errors(spec, message, monkeypatch):
    from core.specs import parse_spec
    from tasks.base import InputError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(InputError, match=message):
        parse_spec(spec)


# ---------------------------------------------------------------------------------------------------------------
# Prompts and tool schemas


def test_every_role_has_a_prompt_and_rendering_is_strict():
    import jinja2

    from prompts import names, render
    from roles.agent.tools import TOOLS

    assert set(names()) == {"planner", "data_selection", "data_construction", "data_validation", "trainer", "logger"}
    for name in names():
        text = render(
            name,
            task_name="gsm8k",
            task_description="grade-school maths",
            answer_format="#### N",
            tools=TOOLS[name],
            max_steps=8,
            max_invalid=3,
            options={"strip_annotations": (True, "Drop the calculator notes.")},
        )
        assert "{{" not in text and "handoff" in text and "test split" in text
        if name == "data_construction":
            assert "`strip_annotations` (default true): Drop the calculator notes." in text
    with pytest.raises(jinja2.UndefinedError):
        render("planner", task_name="gsm8k")


def test_tools_are_documented_and_hide_their_infrastructure():
    from roles.agent.tools import TOOLS

    for role, tools in TOOLS.items():
        for tool in tools:
            schema = tool.tool_call_schema.model_json_schema()
            assert tool.description, f"{role}/{tool.name} has no docstring"
            assert "runtime" not in schema.get("properties", {}), f"{tool.name} exposes its runtime"
            undocumented = [a for a, s in schema.get("properties", {}).items() if not s.get("description")]
            assert not undocumented, f"{tool.name}: arguments without a docstring entry: {undocumented}"


def test_no_handoff_or_tool_exposes_generation_settings():
    from roles.agent.forms import AnalysisForm, VerdictForm, construction_form, plan_form, selection_form, train_form
    from roles.agent.tools import TOOLS
    from tasks.base import GenerationSettings

    schemas = [
        f.model_json_schema()
        for f in (
            plan_form(None, 100),
            selection_form(100),
            construction_form(DataKnobs()),
            VerdictForm,
            train_form(TrainKnobs()),
            AnalysisForm,
        )
    ]
    schemas += [t.tool_call_schema.model_json_schema() for tools in TOOLS.values() for t in tools]
    text = json.dumps(schemas)
    for name in [*GenerationSettings.model_fields, "temperature", "top_p"]:
        assert f'"{name}"' not in text, name


def test_weak_backbones_choose_sources_and_knobs_from_enums():
    """A grammar can hold a small model inside an enum but not inside a float range, nor to files that exist."""
    from core.sources import PATTERN as SOURCE_PATTERN
    from roles.agent.forms import TRAIN_GRID, selection_form, train_form

    names = selection_form(64, ["local:/data/extra.jsonl"], grid=True).model_json_schema()
    assert names["$defs"]["SourceForm"]["properties"]["name"]["enum"] == ["benchmark_train", "local:/data/extra.jsonl"]
    free = selection_form(64).model_json_schema()["$defs"]["SourceForm"]["properties"]["name"]
    assert free["pattern"] == SOURCE_PATTERN and "enum" not in free
    props = train_form(TrainKnobs(learning_rate=3e-5, cutoff_len=512), grid=True).model_json_schema()["properties"]
    assert props["learning_rate"]["enum"] == sorted([*TRAIN_GRID["learning_rate"], 3e-5])  # the planned value stays
    assert min(props["cutoff_len"]["enum"]) == 512  # never below what the data was built for
    assert "enum" not in train_form(TrainKnobs()).model_json_schema()["properties"]["epochs"]
