"""The bfcl task is inspect-evals' own `bfcl(categories="simple_python")`, read offline. Its prompts carry their
own tool definitions: training rows carry them exactly as inspect's hf/ provider hands them to the chat template,
answer in the tool-call text the provider parses back, and validation compares prompts with the tools masked."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import DataStage
from conftest import plan_of as _plan
from test_task_aime2025 import assert_package_checksummed, mock_model, through_first_validation

from core.handoffs import DataKnobs
from tasks import get_task
from tasks.base import TrainingExample

# A ChatML template that renders tools in the Hermes style (as Qwen2.5's and PostTrainBench's SmolLM template do);
# SmolLM2's own template drops them.
HERMES_TEMPLATE = (
    "{%- if tools %}{{ '<|im_start|>system\\nYou may call one of these functions:\\n<tools>' }}"
    "{%- for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{%- endfor %}"
    "{{ '\\n</tools>\\nReply with <tool_call>{\"name\": <function-name>, \"arguments\": <args-json-object>}"
    "</tool_call><|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.fixture(scope="module")
def hermes_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a chat template that renders tools."""
    out = tmp_path_factory.mktemp("hermes") / "tiny-hermes"
    shutil.copytree(tiny_model_dir, out)
    (out / "chat_template.jinja").write_text(HERMES_TEMPLATE)
    return out


def _upstream_offline(monkeypatch, data_dir: Path):
    """inspect-evals' bfcl task itself, its data folder pointed at the local copy (independently of tasks/)."""
    upstream = importlib.import_module("inspect_evals.bfcl.bfcl")
    monkeypatch.setattr(upstream, "DATASET_LOCATION", data_dir / "bfcl" / "BFCL")
    return upstream.bfcl(categories="simple_python")


def test_prompt_and_tools_are_inspect_evals_own(monkeypatch, data_dir, tmp_path, tiny_model_dir, hermes_model_dir):
    import inspect_ai
    from inspect_ai.log import resolve_sample_attachments
    from inspect_ai.model import ChatMessageUser
    from inspect_ai.model._providers.hf import HuggingFaceAPI
    from transformers import AutoTokenizer

    from tasks.bfcl import _dump

    ours = get_task("bfcl", data_dir)
    ours.inspect_task()
    log = inspect_ai.eval(_upstream_offline(monkeypatch, data_dir), model=mock_model(["no call"] * 3), limit=3,
                          log_dir=str(tmp_path), display="none")[0]
    samples = [resolve_sample_attachments(s) for s in log.samples]  # the log keeps long strings apart
    assert [s.id for s in samples] == ["simple_python_0", "simple_python_1", "simple_python_10"]
    rows = {r["id"]: r for r in ours.load_test()}
    examples = [ours.training_example(rows[s.id], DataKnobs()) for s in samples]
    assert ours.eval_inputs(3) == [ex.input_text for ex in examples]
    assert ours.eval_tools(3) == [ex.tools for ex in examples]
    for sample, ex in zip(samples, examples, strict=True):
        theirs = [{"role": m.role, "content": m.text} for m in sample.messages if m.role in ("system", "user")]
        assert ours.prompt_messages(ex.input_text) == theirs == ex.messages
        model_call = next(e for e in sample.events if e.event == "model")
        assert _dump(model_call.tools) == ex.tools  # what the task handed the model, as hf/ dumps it
    # The prompt hf/ itself renders (model, tokenizer, chat template, tools) is the one construction renders.
    tools = next(e for e in samples[0].events if e.event == "model").tools
    for model_dir in (tiny_model_dir, hermes_model_dir):
        api = HuggingFaceAPI(str(model_dir), device="cpu")
        tok = AutoTokenizer.from_pretrained(model_dir)
        ours_text = tok.apply_chat_template(examples[0].messages, tools=examples[0].tools, tokenize=False,
                                            add_generation_prompt=True)
        assert api.hf_chat([ChatMessageUser(content=examples[0].input_text)], tools) == ours_text
        assert ("calculate_triangle_area" in ours_text) is (model_dir == hermes_model_dir)  # SmolLM2 drops tools


@pytest.mark.parametrize("family", ["tiny-model0", "smollm2-135m-instruct-v2", "HuggingFaceTB/SmolLM2-135M-Instruct",
                                    "Qwen/Qwen2.5-0.5B-Instruct"])
def test_training_answers_parse_back_and_score(family, data_dir, tmp_path):
    """A training response, read back by inspect's HFHandler for the model family (as hf/ and prefixcache/ do),
    is one tool call the canonical AST scorer accepts; a wrong value scores 0, a second call too."""
    import inspect_ai
    from inspect_ai.model import ChatCompletionChoice, ModelOutput
    from inspect_ai.model._providers.util import HFHandler

    task = get_task("bfcl", data_dir)
    rows = {r["id"]: r for r in task.load_test()}
    by_input = {task.training_example(r, DataKnobs()).input_text: r for r in rows.values()}

    def answer(mutate):
        def respond(messages, tools, *_):
            response = mutate(task.training_example(by_input[messages[-1].text], DataKnobs()).response)
            message = HFHandler(family, family).parse_assistant_response(response, tools)
            return ModelOutput(model="m", choices=[ChatCompletionChoice(message=message)])
        return respond

    def wrong(r: str) -> str:  # every sample's first argument changed
        call = json.loads(r.split("\n")[1])
        first = next(iter(call["arguments"]))
        v = call["arguments"][first]
        call["arguments"][first] = v + 1000 if isinstance(v, (int, float)) else f"{v}-wrong"
        return f"<tool_call>\n{json.dumps(call)}\n</tool_call>"

    for mutate, expected in ((lambda r: r, 1), (wrong, 0), (lambda r: r + "\n" + r, 0)):
        log = inspect_ai.eval(task.inspect_task(), model=mock_model(answer(mutate)), limit=6, log_dir=str(tmp_path),
                              display="none")[0]
        assert [next(iter(s.scores.values())).value for s in log.samples] == [expected] * 6, log.samples[0].scores


def test_mbpp_rows_become_function_calls(data_dir):
    task = get_task("bfcl", data_dir)
    rows = task.load_train()
    assert 350 <= len(rows) <= 374 and all(task.row_ok(r) for r in rows)
    first = rows[0]  # MBPP 601's asserts pass Pair objects: no literal call, so 602 comes first
    assert first["id"] == "mbpp_602"
    ex = task.training_example(first, DataKnobs())
    assert ex.messages == [{"role": "user", "content": "Find the first repeated character in a given string, "
                                                       "with str1 = 'abcabc'."}]
    assert ex.response == '<tool_call>\n{"name": "first_repeated_char", "arguments": {"str1": "abcabc"}}\n</tool_call>'
    assert ex.tools == [{"name": "first_repeated_char", "description": "Find the first repeated character in a given "
                         "string. Note that the provided function is in Python 3 syntax.",
                         "parameters": {"type": "object", "properties": {"str1": {"type": "string", "description":
                                        "The str1 argument."}}, "required": ["str1"], "additionalProperties": False}}]
    assert task.answer_ok(ex.response) and not task.answer_ok("first_repeated_char(str1='abcabc')")
    raw = task.training_example(first, DataKnobs(rewrite_answers=False))
    assert raw.response == "first_repeated_char(str1='abcabc')"
    test_ids = set(task.test_texts())
    assert len(test_ids) == 400 and not test_ids & {r["id"] for r in rows}
    types = {p["type"] for r in rows for p in r["function"][0]["parameters"]["properties"].values()}
    assert types <= {"integer", "float", "string", "boolean", "array", "tuple", "dict"} and "array" in types


def test_validation_masks_per_sample_tools(make_context, hermes_model_dir, monkeypatch):
    """With a template that renders tools, the prompts differ in their tools and still align; a dataset rendered
    without its tools does not."""
    ctx = make_context(task="bfcl", base_model=str(hermes_model_dir))
    verdict, nxt = DataStage(ctx, _plan(max_rows=40)).step()
    assert verdict.decision == "approve" and nxt == ("trainer",), verdict.reasons
    assert all(c.passed for c in verdict.checks), verdict.checks
    report = (ctx.ws.iteration_dir(1) / "data" / "validation_report_attempt1.md").read_text()
    assert report.count("<tools>") >= 10  # training and evaluation prompts both show their own tools

    real = type(ctx.task).training_example

    def without_tools(self, row, knobs):
        ex = real(self, row, knobs)
        return TrainingExample(ex.messages, ex.response, ex.source_id, ex.input_text)

    monkeypatch.setattr(type(ctx.task), "training_example", without_tools)
    verdict, _ = DataStage(ctx, _plan(max_rows=40)).step()
    align = next(c for c in verdict.checks if c.name == "alignment")
    assert not align.passed and "40 training prompts differ" in align.detail


def test_graph_baseline_then_data_reaches_approve(make_context):
    ctx = make_context(task="bfcl")
    values, nxt = through_first_validation(ctx)
    assert_package_checksummed(ctx, ("inspect_evals.bfcl",))
    base = values["baseline"]
    assert base.n == 32 and base.limit == 32 and not base.canonical
    verdict = values["verdict"]
    assert verdict.decision == "approve" and nxt == ("trainer",), verdict.reasons
    assert all(c.passed for c in verdict.checks), verdict.checks
    assert values["manifest"].rows > 0


def test_a_student_whose_template_drops_tools_sees_them_in_evaluation_and_training(data_dir, tiny_model_dir, tmp_path):
    """SmolLM2's own template renders no tools; the task's template lists them, for the evaluation (the provider
    renders with it) and for the training rows alike."""
    from core.handoffs import DataKnobs, SourceChoice
    from tasks.bfcl import TOOLS_TEMPLATE
    from tools.data import construct, load_records

    task = get_task("bfcl", data_dir)
    assert task.chat_template(str(tiny_model_dir)) == TOOLS_TEMPLATE
    manifest = construct(task, str(tiny_model_dir), [SourceChoice(name="benchmark_train", reason="r", max_rows=4)],
                         DataKnobs(max_rows=4), tmp_path / "data", cutoff_len=1024, exclude_ids=set(), attempt=1)
    records, meta = load_records(tmp_path / "data")
    assert manifest.rows == 4
    for record, m in zip(records, meta):
        assert "<tools>" in record["instruction"] and m["tools"][0]["name"] in record["instruction"]
