"""BFCL simple_python: inspect-evals' `bfcl(categories="simple_python")` task (native tool calling, AST matcher).

The prompt is the user's request alone; the one function it may call goes with it as a tool definition, which
the chat template renders (or not: SmolLM2's own template drops tools, so that student sees only the request).
inspect's hf/ provider reads the model's reply back with its HFHandler: for a model family it has no rule for
(SmolLM2's among them) a `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` block, the Hermes form that
PostTrainBench's vLLM parser for SmolLM also reads. Training responses are written in that form.

BFCL ships test data only (and only simple_python here). The default training source is made locally from MBPP's
train split: each problem's reference function becomes a tool (its signature read with `ast`, parameter types
taken from the literal arguments of one of its test asserts), the request is the problem's text with those
arguments, and the expected call is that assert's call. No model writes any of it.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.base import BenchmarkTask, InputError, MaxTokens, TrainingExample, read_jsonl

if TYPE_CHECKING:
    from core.handoffs import DataKnobs

CATEGORY = "simple_python"
QUESTIONS = Path("BFCL") / f"BFCL_v4_{CATEGORY}.json"
ANSWERS = Path("BFCL") / "possible_answer" / f"BFCL_v4_{CATEGORY}.json"
MBPP_DATASET = "google-research-datasets/mbpp"
MBPP_REVISION = "4bb6404fdc6cacfda99d4ac4205087b89d32030c"
TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
# MBPP's instructions: "Write a (python) function to find ..." → "Find ..."
INSTRUCTION = re.compile(r"^\W*write\s+(?:an?\s+)?(?:python\s+)?function\s+(?:to|that|which|where)\s+", re.IGNORECASE)


TOOLS_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "{%- if tools %}<|im_start|>system\n{% if system %}{{ system }}\n\n{% endif %}"
    "These functions are available. Their definitions, one JSON object per line, are between <tools> and </tools>:\n"
    "<tools>\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}</tools>\n\n"
    "To call a function, answer with a JSON object holding its name and its arguments between <tool_call> and "
    "</tool_call>:\n<tool_call>\n{\"name\": <function name>, \"arguments\": <arguments as a JSON object>}\n</tool_call>"
    "<|im_end|>\n{% elif system %}<|im_start|>system\n{{ system }}<|im_end|>\n{% endif %}"
    "{%- for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""For a ChatML student whose own template drops tool definitions (SmolLM2's does): without it the model never sees
the function it must call. PostTrainBench likewise serves SmolLM with a template of its own that lists the tools and
asks for `<tool_call>` answers; this one says the same in its own words and, unlike that one, has no date in it."""


class BFCL(BenchmarkTask):
    name = "bfcl"
    description = ("BFCL simple_python: 400 requests that each need one call of one given Python function; the "
                   "score is the share whose call matches an allowed one (function, arguments and values).")
    answer_line_hint = ('exactly one tool call and nothing else: <tool_call>{"name": <function>, "arguments": '
                        '{<parameter>: <value>, ...}}</tool_call>')
    eval_modules = ("inspect_evals.bfcl",)
    # PostTrainBench: 16000, then 12000 and 8000 on failure. A call takes well under 256 tokens, so the CPU
    # profile's cap cuts only rambling (scores are then not canonical).
    max_tokens = MaxTokens(canonical=16000, cascade=(12000, 8000), cpu=256)
    train_cutoff = 512
    train_source = ("function-calling rows made locally from MBPP's train split (BFCL ships no training data): each "
                    "problem's reference function as the tool, its text and one test's arguments as the request, "
                    "that test's call as the answer")

    def chat_template(self, model_dir: str) -> str | None:
        """TOOLS_TEMPLATE for a ChatML model whose own template does not render tools; None otherwise."""
        own = _own_template(model_dir)
        return TOOLS_TEMPLATE if own and "<|im_start|>" in own and "tools" not in own else None

    # -- data ----------------------------------------------------------------------------------------------

    def load_test(self) -> list[dict[str, Any]]:
        root = self.data_dir / self.name if self.data_dir is not None else self._cache_root()
        return _read_test(root)

    def load_train(self) -> list[dict[str, Any]]:
        if self.data_dir is not None:
            rows = read_jsonl(self.data_dir / "mbpp" / "train.jsonl", required=("task_id", "text", "code", "test_list"))
        else:
            from datasets import load_dataset  # heavy; only on the hub path

            rows = list(load_dataset(MBPP_DATASET, "full", split="train", revision=MBPP_REVISION))
        return [r for r in map(mbpp_to_bfcl, rows) if r is not None]

    def test_row_problem(self, row: dict[str, Any]) -> str | None:
        return _row_problem(row)

    def row_ok(self, row: dict[str, Any]) -> bool:
        return _row_problem(row) is None and bool(_arguments(row))

    def dedup_text(self, row: dict[str, Any]) -> str:
        return _request(row)

    def training_example(self, row: dict[str, Any], knobs: DataKnobs) -> TrainingExample:
        problem = _row_problem(row)
        if problem:
            raise InputError(f"training row {row.get('id', '?')}: {problem}")
        from inspect_evals.bfcl.utils import normalize_function_name

        text = _request(row)
        function = row["function"][0]
        arguments = _arguments(row)
        if knobs.rewrite_answers:  # the tool-call form the provider's parser reads back, as the tool list names it
            call = {"name": normalize_function_name(function["name"]), "arguments": arguments}
            response = f"<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>"
        else:  # the source's own form: a Python call
            response = f"{function['name']}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"
        # The canonical solver adds no system message; the request is the whole prompt, beside the tools.
        return TrainingExample([{"role": "user", "content": text}], response, str(row["id"]), text,
                               tools=tool_schemas(row["function"]))

    def test_texts(self) -> dict[str, str]:
        return {str(r["id"]): f"{_request(r)}\n{json.dumps(r['ground_truth'])}" for r in self.load_test()}

    def graded_sample(self, row: dict[str, Any], knobs: DataKnobs):
        """The row as inspect-evals' own loader and `single_turn_record_to_sample` make a simple_python sample: the
        function docs (with its Python-syntax hint) and the parsed ground truth in the metadata its AST scorer
        reads."""
        problem = _row_problem(row)
        if problem:
            raise InputError(f"training row {row.get('id', '?')}: {problem}")
        from inspect_evals.bfcl.bfcl import single_turn_record_to_sample
        from inspect_evals.bfcl.data import BFCLRecord, _add_language_specific_hint_to_function_doc
        from inspect_evals.bfcl.utils import CATEGORIES

        config = CATEGORIES[CATEGORY]
        fields = copy.deepcopy({k: row[k] for k in ("id", "question", "function", "ground_truth")})
        record = BFCLRecord(**fields, category_name=CATEGORY, language=config.language, turns=1)
        record = _add_language_specific_hint_to_function_doc({record.id: record}, config)[record.id]
        sample = single_turn_record_to_sample(record)
        return self._graded(row, knobs, sample.target, metadata=sample.metadata)

    def graded_solver(self):
        """The canonical solver: it passes the sample's function as a tool and generates without running it."""
        return self.inspect_task().solver

    # -- evaluation ----------------------------------------------------------------------------------------

    def inspect_task(self):
        if getattr(self, "_task", None) is None:
            upstream = importlib.import_module("inspect_evals.bfcl.bfcl")
            with _local_data(upstream, self.data_dir / self.name if self.data_dir is not None else None):
                self._task = upstream.bfcl(categories=CATEGORY)
        return self._task

    def prompt_messages(self, input_text: str) -> list[dict[str, str]]:
        """The solver sends the sample's messages as they are (one user turn here) and adds only the tools."""
        return [{"role": "user", "content": input_text}]

    def eval_inputs(self, n: int) -> list[str]:
        return [_user_text(s.input) for s in self.inspect_task().dataset[:n]]

    def eval_tools(self, n: int) -> list[list[dict[str, Any]] | None]:
        """The tool definitions of the first `n` samples, as the provider passes them to the chat template."""
        from inspect_evals.bfcl.utils import create_tool_info_from_dict

        return [_dump([create_tool_info_from_dict(f) for f in s.metadata["tools"]])
                for s in self.inspect_task().dataset[:n]]

    def answer_ok(self, response: str) -> bool:
        calls = TOOL_CALL.findall(response)
        if len(calls) != 1:
            return False
        try:
            call = json.loads(calls[0])
        except ValueError:
            return False
        return (isinstance(call, dict) and isinstance(call.get("name"), str) and bool(call["name"])
                and isinstance(call.get("arguments"), dict) and bool(call["arguments"]))

    def _cache_root(self) -> Path:
        """inspect-evals' own cache (the task downloads BFCL's files there at the pinned commit)."""
        upstream = importlib.import_module("inspect_evals.bfcl.bfcl")
        self.inspect_task()
        return Path(upstream.DATASET_LOCATION).parent


def tool_schemas(functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BFCL function docs as the evaluation hands them to the chat template: inspect-evals' Python-syntax hint
    added to each description, converted to inspect `ToolInfo`s, then dumped as inspect's hf/ provider does."""
    from inspect_evals.bfcl.data import _func_doc_language_specific_pre_processing
    from inspect_evals.bfcl.utils import CATEGORIES, create_tool_info_from_dict

    docs = _func_doc_language_specific_pre_processing(copy.deepcopy(functions), CATEGORIES[CATEGORY])
    return _dump([create_tool_info_from_dict(d) for d in docs])


def _dump(tools: list[Any]) -> list[dict[str, Any]]:
    from inspect_ai.util._json import JSON_SCHEMA_EXTENDED_FIELDS, json_schema_dump

    return [json_schema_dump(t, exclude=JSON_SCHEMA_EXTENDED_FIELDS) for t in tools]


def _user_text(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    users = [m.text for m in messages if m.role == "user"]
    if len(users) != 1 or len(messages) != 1:
        raise InputError(f"expected one user message per {CATEGORY} sample, got {[m.role for m in messages]}")
    return users[0]


def _request(row: dict[str, Any]) -> str:
    try:
        turn = row["question"][0]
        return str(turn[0]["content"]) if len(turn) == 1 and turn[0].get("role") == "user" else ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


def _row_problem(row: dict[str, Any]) -> str | None:
    """Why a row in BFCL's schema (question, function, ground_truth in the possible-answer form) is unusable."""
    if not _request(row).strip():
        return "question must be [[{'role': 'user', 'content': <non-empty text>}]]"
    functions = row.get("function")
    if not isinstance(functions, list) or len(functions) != 1 or not isinstance(functions[0], dict):
        return f"{CATEGORY} rows give exactly one function"
    f = functions[0]
    params = f.get("parameters")
    if not isinstance(f.get("name"), str) or not isinstance(params, dict) or not isinstance(
            params.get("properties"), dict):
        return "the function needs a name and parameters with properties"
    truth = row.get("ground_truth")
    if (not isinstance(truth, list) or len(truth) != 1 or not isinstance(truth[0], dict)
            or list(truth[0]) != [f["name"]] or not isinstance(truth[0][f["name"]], dict)):
        return "ground_truth must be [{<the function's name>: {<parameter>: [<allowed values>]}}]"
    if any(not isinstance(v, list) or not v for v in truth[0][f["name"]].values()):
        return "each ground-truth parameter needs a non-empty list of allowed values"
    if row.get("id") in (None, ""):
        return "id is missing"
    return None


def _arguments(row: dict[str, Any]) -> dict[str, Any]:
    """The expected call's arguments: each parameter's first allowed value; "" marks an optional one left out."""
    allowed = row["ground_truth"][0][row["function"][0]["name"]]
    return {k: v[0] for k, v in allowed.items() if v[0] != ""}


def _read_test(root: Path) -> list[dict[str, Any]]:
    questions = read_jsonl(root / QUESTIONS, required=("id", "question", "function"))
    truths = {r["id"]: r["ground_truth"] for r in read_jsonl(root / ANSWERS, required=("id", "ground_truth"))}
    rows = []
    for i, q in enumerate(questions, 1):
        if q["id"] not in truths:
            raise InputError(f"{root / QUESTIONS}:{i}: {q['id']} has no ground truth in {root / ANSWERS}")
        rows.append({**q, "ground_truth": truths[q["id"]]})
    return rows


# -- MBPP → function-calling rows --------------------------------------------------------------------------


def mbpp_to_bfcl(row: dict[str, Any]) -> dict[str, Any] | None:
    """One MBPP problem as a BFCL simple_python row, or None when no test assert calls the reference function
    with literal arguments only (e.g. objects of a class the code defines)."""
    code = str(row.get("code", "")).replace("\r\n", "\n").replace("\t", "    ")
    try:
        functions = {n.name: n for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)}
    except SyntaxError:
        return None
    for test in row.get("test_list") or []:
        found = _literal_call(str(test), functions)
        if found is None:
            continue
        fn, args = found
        required = [a.arg for a in fn.args.args[: len(fn.args.args) - len(fn.args.defaults)]]
        description = INSTRUCTION.sub("", str(row["text"]).strip())
        description = description[:1].upper() + description[1:]
        properties = {name: {**_bfcl_type(value), "description": f"The {name} argument."}
                      for name, value in args.items()}
        values = ", ".join(f"{name} = {value!r}" for name, value in args.items())
        return {
            "id": f"mbpp_{row['task_id']}",
            "question": [[{"role": "user", "content": f"{description.rstrip('.')}, with {values}."}]],
            "function": [{"name": fn.name, "description": description,
                          "parameters": {"type": "dict", "properties": properties,
                                         "required": [p for p in required if p in args]}}],
            "ground_truth": [{fn.name: {name: [_json_value(v)] for name, v in args.items()}}],
        }
    return None


def _literal_call(test: str, functions: dict[str, ast.FunctionDef]) -> tuple[ast.FunctionDef, dict[str, Any]] | None:
    """`assert f(<literals>) == ...` → (f's definition, its arguments by parameter name)."""
    try:
        node = ast.parse(test.strip()).body[0]
    except (SyntaxError, IndexError):
        return None
    if not isinstance(node, ast.Assert):
        return None
    call = node.test.left if isinstance(node.test, ast.Compare) else node.test
    if isinstance(call, ast.UnaryOp):  # assert not f(...)
        call = call.operand
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.func.id not in functions:
        return None
    fn = functions[call.func.id]
    params = [a.arg for a in fn.args.args]
    if fn.args.vararg or fn.args.kwarg or fn.args.kwonlyargs or len(call.args) > len(params):
        return None
    try:
        args = dict(zip(params, (ast.literal_eval(a) for a in call.args)))
        for kw in call.keywords:
            if kw.arg is None or kw.arg not in params or kw.arg in args:
                return None
            args[kw.arg] = ast.literal_eval(kw.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not args or any(_bfcl_type(v) is None for v in args.values()):
        return None
    return fn, args


def _bfcl_type(value: Any) -> dict[str, Any] | None:
    """BFCL's type for a literal (its own names: float, tuple, dict), or None for what JSON cannot carry."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "float"} if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, (list, tuple)):
        items = [_bfcl_type(v) for v in value]
        if any(i is None for i in items):
            return None
        out: dict[str, Any] = {"type": "array" if isinstance(value, list) else "tuple"}
        if items and all(i == items[0] for i in items):
            out["items"] = items[0]
        return out
    if isinstance(value, dict):
        ok = all(isinstance(k, str) for k in value) and all(_bfcl_type(v) is not None for v in value.values())
        return {"type": "dict"} if ok else None
    return None


def _json_value(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples become lists, as in BFCL's own answers


@contextlib.contextmanager
def _local_data(upstream: Any, root: Path | None) -> Iterator[None]:
    """Point inspect-evals' bfcl at `<data_dir>/bfcl/BFCL` (its cache layout) instead of its download cache.

    Its location is a module constant computed from INSPECT_EVALS_CACHE_DIR when inspect-evals is first imported,
    so setting the variable later does nothing; the constant itself is read when the task is built. The files are
    checked first: the task downloads into that folder when they are missing, and deletes it if that fails.
    """
    if root is None:
        yield
        return
    _read_test(root)
    saved = upstream.DATASET_LOCATION, upstream.FUNC_SOURCE_LOCATION
    upstream.DATASET_LOCATION = root / "BFCL"
    upstream.FUNC_SOURCE_LOCATION = root / "BFCL" / "func_source_code"
    try:
        yield
    finally:
        upstream.DATASET_LOCATION, upstream.FUNC_SOURCE_LOCATION = saved


def _own_template(model_dir: str) -> str | None:
    from transformers import AutoTokenizer

    template = AutoTokenizer.from_pretrained(model_dir).chat_template
    return template if isinstance(template, str) else None
