"""The `local` backbone's server without a model: OpenAI requests as it runs them, its replies as the OpenAI client
and langchain read them, the JSON schema grammar (layout, bounds), and the tokenizer fix llguidance needs for the
GGUF-converted SmolLM2 tokenizer (on a tokenizer of the same shape, built here). The model itself is exercised in
tests/test_local_backbone.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from roles.local_server import (
    EXIT_LOAD_FAILED,
    EXIT_PORT_IN_USE,
    JsonConstraint,
    RequestError,
    byte_level_fix,
    completion_response,
    json_grammar,
    models_response,
    parse_request,
    plain_messages,
)

REPO = Path(__file__).resolve().parents[2]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS = 2
VERDICT = {"type": "object", "additionalProperties": False, "required": ["decision", "reasons"],
           "properties": {"decision": {"enum": ["approve", "back_to_selection"], "type": "string"},
                          "reasons": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 20},
                                      "minItems": 1, "maxItems": 2}}}
HANDOFF_TOOL = {"type": "function", "function": {"name": "handoff", "parameters": VERDICT}}


def gguf_shaped_tokenizer():
    """Byte-level BPE with SmolLM2's GGUF-converted quirks: byte_fallback on, and a ByteFallback/Fuse/Replace(▁)/
    ByteLevel decoder. Its one merge, `Ġ"` (space + quote), is what the unfixed reading refused."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate([*SPECIALS, *alphabet, 'Ġ"'])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", '"')], byte_fallback=True, unk_token=SPECIALS[0],
                               fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True)
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse(), decoders.Replace("▁", " "),
                                     decoders.ByteLevel()])
    tok.add_special_tokens(SPECIALS)
    return tok


@pytest.fixture(scope="module")
def tok():
    return gguf_shaped_tokenizer()


@pytest.fixture(scope="module")
def constraint(tok):
    return JsonConstraint(tok.to_str(), n_vocab=tok.get_vocab_size(), eos_token=EOS)


def accepts(constraint: JsonConstraint, tok, schema: dict, text: str) -> bool:
    """Whether the constrained decoder could write `text` token by token (each token in the mask) and then stop."""
    m = constraint.matcher(schema)
    for t in tok.encode(text).ids:
        if not constraint.allowed(m)[t] or not m.consume_token(t):
            return False
    return m.is_accepting()


# ----------------------------------------------------------------------------------------- the tokenizer fix


def test_unfixed_llguidance_misreads_the_gguf_shaped_tokenizer(tok):
    """What the fix is for: llguidance takes this tokenizer for sentencepiece and never decodes Ġ as a space."""
    from llguidance import LLTokenizer

    ids = tok.encode('{"a": "x y"}').ids
    assert tok.id_to_token(ids[5]) == 'Ġ"' and tok.decode(ids) == '{"a": "x y"}'
    assert LLTokenizer(tok.to_str(), n_vocab=tok.get_vocab_size(), eos_token=EOS).decode_str(ids) != '{"a": "x y"}'


def test_the_fixed_tokenizer_decodes_spaces_and_quotes(tok, constraint):
    ids = tok.encode('{"a": "x y"}').ids
    assert constraint.tokenizer.decode_str(ids) == '{"a": "x y"}'


def test_a_forced_call_can_write_a_space_and_a_quote(tok, constraint):
    """The regression: with the misread tokenizer a forced call stopped after `{"decision":` (space+quote refused)."""
    text = '{"decision": "approve", "reasons": ["all checks passed"]}'
    assert accepts(constraint, tok, VERDICT, text)
    m = constraint.matcher(VERDICT)
    for t in tok.encode(text).ids:
        m.consume_token(t)
    allowed = constraint.allowed(m)
    assert allowed[EOS] and allowed.sum() == 1  # the call is complete: only the end of turn may follow


def test_the_fix_touches_only_byte_level_tokenizers(tok):
    spec = json.loads(tok.to_str())
    fixed = byte_level_fix(spec)
    assert fixed["model"]["byte_fallback"] is False and fixed["decoder"]["type"] == "ByteLevel"
    assert spec["model"]["byte_fallback"] is True  # the input is left as it was
    assert fixed["model"]["vocab"] == spec["model"]["vocab"]
    sentencepiece = {"pre_tokenizer": {"type": "Metaspace", "replacement": "▁"},
                     "model": {"type": "BPE", "byte_fallback": True},
                     "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}]}}
    assert byte_level_fix(sentencepiece) == sentencepiece
    nested = {**spec, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [spec["pre_tokenizer"]]}}
    assert byte_level_fix(nested)["decoder"]["type"] == "ByteLevel"


# ---------------------------------------------------------------------------------------- the JSON grammar


def test_the_grammar_holds_the_schema_bounds(tok, constraint):
    ok = '{"decision": "approve", "reasons": ["fine"]}'
    assert accepts(constraint, tok, VERDICT, ok)
    for bad in ['{"decision": "reject", "reasons": ["fine"]}',  # not in the enum
                '{"decision": "approve", "reasons": []}',  # minItems
                '{"decision": "approve", "reasons": ["a", "b", "c"]}',  # maxItems
                '{"decision": "approve", "reasons": ["' + "x" * 21 + '"]}',  # maxLength
                '{"decision": "approve"}',  # required
                '{"decision": "approve", "reasons": ["a"], "extra": 1}']:  # additionalProperties
        assert not accepts(constraint, tok, VERDICT, bad), bad


def test_the_grammar_fixes_the_layout(tok, constraint):
    """One space after ':' and ',' and nowhere else: a greedy small model cannot indent or pad forever."""
    assert not accepts(constraint, tok, VERDICT, '{"decision":"approve","reasons":["fine"]}')
    assert not accepts(constraint, tok, VERDICT, '{\n  "decision": "approve", "reasons": ["fine"]}')
    assert not accepts(constraint, tok, VERDICT, '{"decision": "approve", "reasons": ["fine"]} ')


def test_every_project_form_compiles_and_accepts_its_own_valid_value(tok, constraint):
    """The handoff forms as the agent loop sends them (convert_to_openai_tool, grid enums as `local` uses)."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from core.handoffs import DataKnobs, TrainKnobs
    from roles.agent import forms

    plan = forms.plan_form(None, 100, grid=True)
    cases = {
        plan: {"problems": ["low accuracy"], "objective": "more data", "changes": ["add rows"],
               "change_kind": "data", "success_criterion": "accuracy up", "references": [],
               "data": {**plan.model_fields["data"].default_factory().model_dump(), "sources": ["benchmark_train"]},
               # 1e-4, not the default 2e-5: llguidance writes that enum value as 0.00002, json.dumps as 2e-05
               "train": {**plan.model_fields["train"].default_factory().model_dump(), "learning_rate": 1e-4}},
        forms.VerdictForm: {"decision": "back_to_selection", "reasons": ["contamination check failed"]},
        forms.AnalysisForm: {"analysis": "no change", "next_action": "train longer"},
        forms.train_form(TrainKnobs(), grid=True): {**TrainKnobs().model_dump(), "learning_rate": 1e-4},
        forms.construction_form(DataKnobs()): None,
        forms.selection_form(100, grid=True): {"target_behaviours": ["arithmetic"],  # in the schema's order
                                               "sources": [{"name": "benchmark_train", "reason": "in domain",
                                                            "max_rows": 100}], "risks": ["overfit"]},
    }
    for form, value in cases.items():
        schema = convert_to_openai_tool(form)["function"]["parameters"]
        json_grammar(schema)  # compiles
        if value is not None:
            form.model_validate(value)
            assert accepts(constraint, tok, schema, _as_llguidance_writes(value)), form.__name__
    schema = convert_to_openai_tool(plan)["function"]["parameters"]
    too_many = {**cases[plan], "data": {**cases[plan]["data"], "sources": ["benchmark_train"] * 4}}
    assert not accepts(constraint, tok, schema, _as_llguidance_writes(too_many))  # maxItems


def _as_llguidance_writes(value) -> str:
    """JSON in the grammar's layout, with integral floats as integers (its enums write 1.0 as 1; both parse)."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return int(v) if isinstance(v, float) and v.is_integer() else v

    return json.dumps(plain(value), separators=(", ", ": "))


def test_a_schema_the_grammar_cannot_hold_is_the_callers_error(constraint):
    with pytest.raises(RequestError, match="cannot constrain"):
        constraint.matcher({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}})


# ------------------------------------------------------------------------------------------------ requests


def test_a_named_tool_choice_forces_that_call_under_its_schema():
    other = {"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}
    req = parse_request({"messages": [{"role": "user", "content": "hi"}], "tools": [other, HANDOFF_TOOL],
                         "tool_choice": {"type": "function", "function": {"name": "handoff"}},
                         "temperature": 0, "max_tokens": 768})
    assert (req.forced, req.schema, req.max_tokens, req.temperature) == ("handoff", VERDICT, 768, 0.0)


def test_tool_choice_forms():
    msgs = [{"role": "user", "content": "hi"}]
    assert parse_request({"messages": msgs, "tools": [HANDOFF_TOOL], "tool_choice": "required"}).forced == "handoff"
    for choice in (None, "auto", "none"):
        req = parse_request({"messages": msgs, "tools": [HANDOFF_TOOL], "tool_choice": choice})
        assert req.forced is None and req.schema is None  # plain text
    req = parse_request({"messages": msgs, "response_format": {"type": "json_schema",
                                                               "json_schema": {"name": "v", "schema": VERDICT}}})
    assert req.forced is None and req.schema == VERDICT
    assert parse_request({"messages": msgs, "response_format": {"type": "json_object"}}).schema == {"type": "object"}


@pytest.mark.parametrize("body, match", [
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [HANDOFF_TOOL],
      "tool_choice": {"type": "function", "function": {"name": "other"}}}, "not among the tools"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [HANDOFF_TOOL, HANDOFF_TOOL | {
        "function": {"name": "b"}}], "tool_choice": "required"}, "exactly one tool"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": True}, "stream"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n=1"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    ({"messages": []}, "non-empty"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "text"),
    ([], "JSON object"),
])
def test_requests_this_server_cannot_serve_are_refused_with_a_reason(body, match):
    with pytest.raises(RequestError, match=match) as e:
        parse_request(body)
    assert e.value.body()["error"]["type"] == "invalid_request_error"


def test_tool_turns_from_the_openai_client_replay_as_plain_text():
    """What langchain-openai sends for a rejected handoff and its re-ask, rendered as SmolLM2's template can."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
    from langchain_openai.chat_models.base import _convert_message_to_dict

    history = [SystemMessage("rules"), HumanMessage("decide"),
               AIMessage("", tool_calls=[{"name": "handoff", "args": {"decision": "approve"}, "id": "c1"}]),
               ToolMessage("Handoff rejected: reasons missing", tool_call_id="c1", name="handoff")]
    out = plain_messages([_convert_message_to_dict(m) for m in history])
    assert out == [{"role": "system", "content": "rules"}, {"role": "user", "content": "decide"},
                   {"role": "assistant", "content": 'handoff({"decision": "approve"})'},
                   {"role": "user", "content": "[handoff result]\nHandoff rejected: reasons missing"}]
    assert plain_messages([{"role": "developer", "content": [{"type": "text", "text": "a"},
                                                             {"type": "text", "text": "b"}]}]) == [
        {"role": "system", "content": "ab"}]


# ----------------------------------------------------------------------------------------------- responses


def test_a_forced_reply_reads_as_a_tool_call_in_the_openai_client_and_langchain():
    from langchain_openai.chat_models.base import _convert_dict_to_message
    from openai.types.chat import ChatCompletion

    args = '{"decision": "back_to_selection", "reasons": ["leak"]}'
    body = completion_response(model="local", text=args, forced="handoff", finish="stop", prompt_tokens=10,
                               completion_tokens=12)
    reply = ChatCompletion.model_validate(body)
    assert reply.choices[0].finish_reason == "tool_calls" and reply.usage.total_tokens == 22
    message = _convert_dict_to_message(body["choices"][0]["message"])
    assert message.tool_calls[0]["name"] == "handoff"
    assert message.tool_calls[0]["args"] == json.loads(args) and not message.invalid_tool_calls


def test_a_call_cut_by_max_tokens_says_length_and_reads_as_an_invalid_call():
    from langchain_openai.chat_models.base import _convert_dict_to_message

    body = completion_response(model="local", text='{"decision": "appr', forced="handoff", finish="length",
                               prompt_tokens=10, completion_tokens=5)
    assert body["choices"][0]["finish_reason"] == "length"
    message = _convert_dict_to_message(body["choices"][0]["message"])
    assert not message.tool_calls and message.invalid_tool_calls[0]["name"] == "handoff"


def test_a_plain_reply_and_the_model_list():
    from openai.types import Model
    from openai.types.chat import ChatCompletion

    body = completion_response(model="local", text="hello", forced=None, finish="stop", prompt_tokens=3,
                               completion_tokens=1)
    reply = ChatCompletion.model_validate(body)
    assert reply.choices[0].message.content == "hello" and not reply.choices[0].message.tool_calls
    assert [Model.model_validate(m).id for m in models_response("local")["data"]] == ["local"]


# -------------------------------------------------------------------------------------- process and client


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roles.local_server", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_the_server_stops_at_once_with_one_line_on_a_taken_port_or_a_missing_model(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        out = _serve("--model", str(tmp_path), "--port", str(s.getsockname()[1]))
    assert out.returncode == EXIT_PORT_IN_USE and "cannot bind" in out.stderr
    out = _serve("--model", str(tmp_path / "absent"), "--port", "0")
    assert out.returncode == EXIT_LOAD_FAILED and "no config.json" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_server_that_cannot_start_is_unreachable_with_its_log_tail(tmp_path):
    from core.errors import BackboneUnreachable
    from roles.llm import LocalServer

    server = LocalServer(tmp_path / "absent", threads=1)
    with pytest.raises(BackboneUnreachable, match=f"exited with code {EXIT_LOAD_FAILED}.*no config.json") as e:
        server.start(deadline_s=30)
    assert e.value.headline().startswith("error: ") and "\n" not in e.value.headline()


def test_the_local_thread_count_is_checked_up_front(monkeypatch):
    from core.errors import InputError
    from roles.llm import LOCAL_THREADS_ENV, check_spec

    check_spec("local")  # the server's packages are part of every install
    for bad in ("0", "two"):
        monkeypatch.setenv(LOCAL_THREADS_ENV, bad)
        with pytest.raises(InputError, match=LOCAL_THREADS_ENV):
            check_spec("local")
