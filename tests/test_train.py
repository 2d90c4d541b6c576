"""tools/train.py: the dataset contract proven through LlamaFactory's own preprocessing, the config check against the
installed argument parsers, the supervised subprocess, and real LlamaFactory runs (tiny model; embedded one is slow)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.errors import DatasetFormatError, TrainConfigError, TrainingFailed
from core.handoffs import DataKnobs
from tools.export import export_model
from tools.llamafactory import TrainConfig, _ProgressParser, check_config, run_training, validation_run
from tools.sft_data import (
    TEMPLATE,
    end_of_turn,
    preference_record,
    record_tokens,
    render_prompt,
    sft_record,
    write_llamafactory_dataset,
)

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------- helpers


def _tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def gsm8k_records(data_dir: Path, tokenizer, n: int, *, cutoff_len: int, with_system: bool = False) -> list[dict]:
    """The first `n` GSM8K train rows that fit `cutoff_len`, rendered through the dataset contract."""
    from tasks.gsm8k import GSM8K

    task = GSM8K(data_dir)
    eos = end_of_turn(tokenizer)
    records = []
    for row in task.load_train():
        ex = task.training_example(row, DataKnobs(with_system=with_system, options={"strip_annotations": False}))
        rec = sft_record(render_prompt(tokenizer, ex.messages), ex.response, eos)
        if record_tokens(tokenizer, rec) <= cutoff_len:
            records.append(rec)
        if len(records) == n:
            return records
    raise AssertionError(f"only {len(records)} rows fit cutoff_len={cutoff_len}")


def preference_records(data_dir: Path, tokenizer, n: int, *, cutoff_len: int) -> list[dict]:
    """`n` GSM8K pairs: the row's own solution chosen, the next row's solution (a wrong answer) rejected."""
    rows = gsm8k_records(data_dir, tokenizer, n + 1, cutoff_len=cutoff_len // 2)
    eos = end_of_turn(tokenizer)
    return [preference_record(a["instruction"], a["output"], b["output"], eos) for a, b in zip(rows, rows[1:])]


def _config(model_dir: Path, dataset_dir: Path, output_dir: Path, **fields) -> TrainConfig:
    fields.setdefault("dataset", "pref" if fields.get("stage") == "dpo" else "sft")
    return TrainConfig.for_device(on_gpu=False, model_name_or_path=str(model_dir), dataset_dir=str(dataset_dir),
                                  output_dir=str(output_dir), **fields)


# ------------------------------------------------------------------------------------------- dataset contract


def test_end_of_turn_is_read_from_the_chat_template(tiny_model_dir: Path) -> None:
    tok = _tokenizer(tiny_model_dir)
    assert end_of_turn(tok) == "<|im_end|>"  # ChatML
    tok.chat_template = (  # a Llama-3-style template: the marker differs and is still found
        "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
        "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    )
    assert end_of_turn(tok) == "<|eot_id|>"


def test_sft_record_appends_end_of_turn_once() -> None:
    assert sft_record("P", "answer", "<|im_end|>") == {"instruction": "P", "output": "answer<|im_end|>"}
    assert sft_record("P", "answer<|im_end|>", "<|im_end|>")["output"] == "answer<|im_end|>"
    with pytest.raises(DatasetFormatError):
        sft_record("P", "  ", "<|im_end|>")


def test_write_dataset_registers_it_and_refuses_truncation(tmp_path: Path, tiny_model_dir: Path) -> None:
    tok = _tokenizer(tiny_model_dir)
    records = [sft_record("a prompt", "a response", "<|im_end|>"), sft_record("b", "c", "<|im_end|>")]
    path = write_llamafactory_dataset(records, tmp_path, "mine")
    assert json.loads(path.read_text()) == records
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["mine"] == {"file_name": "mine.json", "formatting": "alpaca",
                            "columns": {"prompt": "instruction", "response": "output"}}
    write_llamafactory_dataset(records[:1], tmp_path, "other")  # a second dataset keeps the first registered
    assert set(json.loads((tmp_path / "dataset_info.json").read_text())) == {"mine", "other"}
    with pytest.raises(DatasetFormatError, match="exceed cutoff_len=3"):
        write_llamafactory_dataset(records, tmp_path, "mine", tokenizer=tok, cutoff_len=3)
    with pytest.raises(DatasetFormatError, match="expected exactly"):
        write_llamafactory_dataset([{"instruction": "x"}], tmp_path, "bad")


def _llamafactory_rows(cfg: TrainConfig, stage: str) -> tuple[list[dict], object]:
    """The train rows LlamaFactory's own get_dataset makes from cfg (its loader, template and tokenizer; stage "rm"
    is the pairwise path run_dpo takes), and the parsed finetuning arguments."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, finetuning_args, _ = get_train_args(cfg.to_dict())
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    dataset = get_dataset(template, model_args, data_args, training_args, stage=stage, **tokenizer_module)
    return list(dataset["train_dataset"]), finetuning_args


def test_llamafactory_preprocessing_adds_nothing_to_the_rendered_text(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    """LlamaFactory's own get_dataset (the path run_sft takes) on our records: input_ids are exactly the tokens of
    prompt + response + end-of-turn, and the labels mask exactly the prompt."""
    from llamafactory.extras.constants import IGNORE_INDEX

    tok = _tokenizer(tiny_model_dir)
    # One record with the 10-shot system prompt, one without: both shapes the data engineer produces.
    records = (gsm8k_records(data_dir, tok, 1, cutoff_len=4096, with_system=True)
               + gsm8k_records(data_dir, tok, 1, cutoff_len=4096))
    assert records[0]["instruction"].startswith("<|im_start|>system\n")
    assert records[0]["instruction"].endswith("<|im_start|>assistant\n")
    write_llamafactory_dataset(records, tmp_path / "data", "sft")
    cfg = _config(tiny_model_dir, tmp_path / "data", tmp_path / "out", cutoff_len=4096)
    check_config(cfg)

    rows, _ = _llamafactory_rows(cfg, "sft")

    assert len(rows) == 2
    for rec, row in zip(records, rows):
        prompt = tok(rec["instruction"], add_special_tokens=False)["input_ids"]
        expected = tok(rec["instruction"] + rec["output"], add_special_tokens=False)["input_ids"]
        assert row["input_ids"] == expected
        assert row["labels"] == [IGNORE_INDEX] * len(prompt) + expected[len(prompt):]
        assert tok.convert_ids_to_tokens(expected[-1]) == "<|im_end|>"
        assert expected[0] != tok.bos_token_id or rec["instruction"].startswith(tok.bos_token)  # no added bos


def test_preference_record_ends_each_response_once() -> None:
    eos = "<|im_end|>"
    assert preference_record("P", "right", "wrong<|im_end|>", eos) == {
        "instruction": "P", "chosen": "right<|im_end|>", "rejected": "wrong<|im_end|>"}
    for prompt, chosen, rejected in [("", "a", "b"), ("P", " ", "b"), ("P", "a", "\n")]:
        with pytest.raises(DatasetFormatError, match="empty"):
            preference_record(prompt, chosen, rejected, eos)
    with pytest.raises(DatasetFormatError, match="identical"):
        preference_record("P", "same", "same<|im_end|>", eos)


def test_write_ranking_dataset_registers_the_pairwise_columns(tmp_path: Path, tiny_model_dir: Path) -> None:
    tok = _tokenizer(tiny_model_dir)
    records = [preference_record("a prompt", "short", "a much longer rejected response", "<|im_end|>")]
    path = write_llamafactory_dataset(records, tmp_path, "pref", ranking=True)
    assert json.loads(path.read_text()) == records
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["pref"] == {"file_name": "pref.json", "formatting": "alpaca", "ranking": True,
                            "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}}
    # The pairwise length is the prompt plus the longer response (what LlamaFactory fits within cutoff_len).
    count = len(tok.encode("a prompt", add_special_tokens=False)) + len(
        tok.encode("a much longer rejected response<|im_end|>", add_special_tokens=False))
    assert record_tokens(tok, records[0]) == count
    write_llamafactory_dataset(records, tmp_path, "pref", ranking=True, tokenizer=tok, cutoff_len=count)
    with pytest.raises(DatasetFormatError, match=f"exceed cutoff_len={count - 1}"):
        write_llamafactory_dataset(records, tmp_path, "pref", ranking=True, tokenizer=tok, cutoff_len=count - 1)
    with pytest.raises(DatasetFormatError, match="expected exactly"):  # SFT rows are not pairwise, and back
        write_llamafactory_dataset([sft_record("p", "r", "<|im_end|>")], tmp_path, "bad", ranking=True)
    with pytest.raises(DatasetFormatError, match="expected exactly"):
        write_llamafactory_dataset(records, tmp_path, "bad")


def test_llamafactory_pairwise_preprocessing_adds_nothing_to_the_rendered_text(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    """LlamaFactory's own get_dataset on the pairwise path run_dpo takes (stage "rm"): chosen and rejected input_ids
    are exactly prompt + chosen and prompt + rejected, and the labels mask exactly the prompt."""
    from llamafactory.extras.constants import IGNORE_INDEX

    tok = _tokenizer(tiny_model_dir)
    records = preference_records(data_dir, tok, 2, cutoff_len=4096)
    write_llamafactory_dataset(records, tmp_path / "data", "pref", ranking=True, tokenizer=tok, cutoff_len=4096)
    cfg = _config(tiny_model_dir, tmp_path / "data", tmp_path / "out", stage="dpo", cutoff_len=4096)
    check_config(cfg)

    rows, finetuning_args = _llamafactory_rows(cfg, "rm")
    assert finetuning_args.stage == "dpo" and finetuning_args.use_ref_model

    assert len(rows) == 2
    for rec, row in zip(records, rows):
        prompt = tok(rec["instruction"], add_special_tokens=False)["input_ids"]
        for side in ("chosen", "rejected"):
            response = tok(rec[side], add_special_tokens=False)["input_ids"]
            assert row[f"{side}_input_ids"] == prompt + response
            assert tok.decode(row[f"{side}_input_ids"]) == rec["instruction"] + rec[side]
            assert row[f"{side}_labels"] == [IGNORE_INDEX] * len(prompt) + response
            assert tok.convert_ids_to_tokens(response[-1]) == "<|im_end|>"
            assert rec[side].count("<|im_end|>") == 1
        assert row["chosen_input_ids"] != row["rejected_input_ids"]


# ---------------------------------------------------------------------------------------------- config check


def test_check_config_accepts_our_recipe_and_rejects_unknown_keys(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "model", tmp_path, tmp_path / "out", max_steps=3)
    check_config(cfg)
    check_config(TrainConfig.for_device(on_gpu=False, model_name_or_path="m", dataset="d", dataset_dir="x",
                                        output_dir="o", finetuning_type="lora"))
    with pytest.raises(TrainConfigError, match="unknown train argument.*bogus_learning_knob"):
        check_config({**cfg.to_dict(), "bogus_learning_knob": 1})
    with pytest.raises(TrainConfigError, match="SchedulerType"):
        check_config({**cfg.to_dict(), "lr_scheduler_type": "not-a-schedule"})
    dpo = _config(tmp_path / "model", tmp_path, tmp_path / "out", stage="dpo")
    check_config(dpo)
    check_config(dpo.model_copy(update={"finetuning_type": "lora", "lora_rank": 8, "lora_target": "all"}))
    with pytest.raises(TrainConfigError, match="dpo_label_smoothing"):  # the installed parser's own DPO checks
        check_config({**dpo.to_dict(), "pref_loss": "ipo", "dpo_label_smoothing": 0.1})


def test_train_config_is_strict() -> None:
    base = dict(model_name_or_path="m", dataset="d", dataset_dir="x", output_dir="o")
    with pytest.raises(ValueError, match="warmup_ratio"):
        TrainConfig(**base, warmup_ratio=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="lora"):
        TrainConfig(**base, lora_rank=8)
    with pytest.raises(ValueError, match="exclusive"):
        TrainConfig(**base, bf16=True, fp16=True)
    lora = TrainConfig(**base, finetuning_type="lora")
    assert (lora.lora_rank, lora.lora_target) == (8, "all")
    assert TrainConfig(**base).template == TEMPLATE == "empty"
    assert "max_steps" not in TrainConfig(**base).to_yaml()  # unset optionals are left to LlamaFactory
    gpu = TrainConfig.for_device(on_gpu=True, **base)
    assert (gpu.bf16, gpu.use_cpu) == (True, False)
    with pytest.raises(ValueError, match="only apply to stage 'dpo'"):
        TrainConfig(**base, pref_beta=0.1)
    with pytest.raises(ValueError, match="only apply to stage 'dpo'"):
        TrainConfig(**base, pref_loss="sigmoid")
    with pytest.raises(ValueError, match="greater than 0"):
        TrainConfig(**base, stage="dpo", pref_beta=0)
    with pytest.raises(ValueError, match="pref_loss"):
        TrainConfig(**base, stage="dpo", pref_loss="not-a-loss")  # type: ignore[arg-type]
    dpo = TrainConfig(**base, stage="dpo")
    assert (dpo.pref_beta, dpo.pref_loss) == (0.1, "sigmoid")  # rendered, so the recipe on disk says them
    assert "pref_beta: 0.1" in dpo.to_yaml() and "pref_loss: sigmoid" in dpo.to_yaml()
    assert TrainConfig(**base, stage="dpo", pref_beta=0.5, pref_loss="ipo").pref_beta == 0.5
    assert "pref_" not in TrainConfig(**base).to_yaml()


# ------------------------------------------------------------------------------------------- the subprocess


def test_progress_parser_reads_the_training_bar_and_log_dicts() -> None:
    lines = [
        "Running tokenizer on dataset: 100%|##########| 16/16 [00:00<00:00, 237.54 examples/s]",
        "Loading weights:   0%|          | 0/20 [00:00<?, ?it/s]",
        "  0%|          | 0/4 [00:00<?, ?it/s]",
        " 25%|##5       | 1/4 [00:08<00:26,  8.88s/it]",
        "{'loss': '10.83', 'grad_norm': '1.397', 'learning_rate': '0.001', 'epoch': '0.25'}",
        " 50%|#####     | 2/4 [00:18<00:18,  9.27s/it]",
        " 50%|#####     | 2/4 [00:18<00:18,  9.27s/it]",
        "{'train_runtime': '36.08', 'train_loss': '10.68', 'epoch': '1'}",
    ]
    parser = _ProgressParser(logging_steps=2)
    out = [p for line in lines if (p := parser.feed(line))]
    assert out == ["step 0/4", "step 1/4", "step 1/4 loss 10.8300", "done: 2/4 steps, train_loss 10.6800"]
    # Without the bar (transformers hides it below warning verbosity) the epoch says where training is.
    quiet = _ProgressParser(logging_steps=2)
    assert [quiet.feed(lines[i]) for i in (4, 7)] == ["epoch 0.25: loss 10.8300", "done: train_loss 10.6800"]


def _fake_python(tmp_path: Path, body: str) -> str:
    """A stand-in for the venv's python that ignores the LlamaFactory arguments and runs `body` (bash)."""
    script = tmp_path / "fake-python"
    script.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return str(script)


def test_a_failing_run_raises_with_the_log_tail(tmp_path: Path) -> None:
    fake = _fake_python(tmp_path, """
        for i in $(seq 1 60); do echo "line $i"; done
        printf '  0%%|          | 0/4 [00:00<?, ?it/s]\\r'
        echo "ValueError: something broke" >&2
        exit 3
    """)
    seen: list[str] = []
    cfg = _config(tmp_path / "model", tmp_path, tmp_path / "out")
    with pytest.raises(TrainingFailed) as err:
        run_training(cfg, tmp_path / "work", seen.append, python=fake)
    assert err.value.returncode == 3
    assert len(err.value.log_tail) == 40 and err.value.log_tail[-1] == "ValueError: something broke"
    assert "line 60" in err.value.log_tail and "line 1" not in err.value.log_tail
    assert seen == ["step 0/4"]
    log = (tmp_path / "work" / "train.log").read_text()
    assert "line 1\n" in log and "something broke" in log
    command = (tmp_path / "work" / "command.txt").read_text().strip()
    assert command.endswith(f"llamafactory.cli train {tmp_path / 'work' / 'llamafactory.yaml'}")
    assert "template: empty" in (tmp_path / "work" / "llamafactory.yaml").read_text()


def test_the_child_gets_the_callers_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # must reach the trainer exactly as the caller set it
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    fake = _fake_python(
        tmp_path,
        """
        echo "env CUDA=$CUDA_VISIBLE_DEVICES OMP=$OMP_WAIT_POLICY DVC=$DISABLE_VERSION_CHECK"
        printf '  0%%|          | 0/2 [00:00<?, ?it/s]\\r 50%%|#####     | 1/2 [00:01<00:01,  1.00s/it]\\n'
        echo "{'loss': '1.5', 'grad_norm': '2.0', 'learning_rate': '1e-05', 'epoch': '0.5'}"
    """,
    )
    seen: list[str] = []
    run = run_training(
        _config(tmp_path / "model", tmp_path, tmp_path / "out"), tmp_path / "work", seen.append, python=fake
    )
    assert "env CUDA=3 OMP=PASSIVE DVC=1" in run.log_path.read_text()
    assert (run.returncode, run.steps, run.train_loss) == (0, 1, 1.5)  # no trainer files: parsed from the log
    assert seen == ["step 0/2", "step 1/2 loss 1.5000"]


def test_a_run_past_its_timeout_is_killed(tmp_path: Path) -> None:
    fake = _fake_python(tmp_path, f"echo $$ > {tmp_path}/pid; sleep 600\n")
    cfg = _config(tmp_path / "model", tmp_path, tmp_path / "out")
    started = time.monotonic()
    with pytest.raises(TrainingFailed, match="timed out"):
        run_training(cfg, tmp_path / "work", python=fake, timeout_s=2)
    assert time.monotonic() - started < 30
    assert not _alive(int((tmp_path / "pid").read_text()))


def test_the_trainer_dies_with_its_parent(tmp_path: Path) -> None:
    """SIGKILL the process that called run_training: PDEATHSIG takes the trainer down with it."""
    fake = _fake_python(tmp_path, f"echo $$ > {tmp_path}/pid; exec sleep 600\n")
    parent = textwrap.dedent(f"""
        import tools.llamafactory as t
        from pathlib import Path
        t.check_config = lambda cfg: None  # only process handling is under test here
        cfg = t.TrainConfig(model_name_or_path="m", dataset="d", dataset_dir="x", output_dir="o")
        t.run_training(cfg, Path({str(tmp_path / "work")!r}), python={fake!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    pid_file = tmp_path / "pid"
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None, "the fake trainer never started"
        time.sleep(0.2)
    child = int(pid_file.read_text())
    assert _alive(child)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as dead.
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().split(") ", 1)[1][0] != "Z"


# ------------------------------------------------------------------------------------------- real LlamaFactory


def _train_validate_export(model_dir: Path, data_dir: Path, workdir: Path, *, rows: int, pairwise: bool = False,
                           **fields) -> dict:
    """Validation run, full run and export of `model_dir` on GSM8K rows (pairs when `pairwise`), the way the
    trainer role does it."""
    tok = _tokenizer(model_dir)
    cutoff = fields.setdefault("cutoff_len", 1024)
    if pairwise:
        records = preference_records(data_dir, tok, rows, cutoff_len=cutoff)
        write_llamafactory_dataset(records, workdir / "data", "pref", ranking=True, tokenizer=tok, cutoff_len=cutoff)
    else:
        records = gsm8k_records(data_dir, tok, rows, cutoff_len=cutoff)
        write_llamafactory_dataset(records, workdir / "data", "sft", tokenizer=tok, cutoff_len=cutoff)
    cfg = _config(model_dir, workdir / "data", workdir / "full" / "output", **fields)
    progress: list[str] = []
    t0 = time.monotonic()
    check = validation_run(cfg, workdir, progress.append)
    t1 = time.monotonic()
    run = run_training(cfg, workdir / "full", progress.append)
    t2 = time.monotonic()
    final = export_model(run.output_dir, workdir / "final", base_model=model_dir)
    return dict(check=check, run=run, final=final, progress=progress, validation_s=t1 - t0, full_s=t2 - t1)


def _assert_loads_and_generates(final: Path, base: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((final / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert any(final.glob("*.safetensors")) and not any(final.glob("*.bin"))
    assert not (final / "trainer_state.json").exists() and not (final / "training_args.bin").exists()
    tok = AutoTokenizer.from_pretrained(final)
    assert tok.chat_template == AutoTokenizer.from_pretrained(base).chat_template
    model = AutoModelForCausalLM.from_pretrained(final)
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_llamafactory_full_sft_on_the_tiny_model(tmp_path: Path, tiny_model_dir: Path, data_dir: Path) -> None:
    # 16 rows at batch 8: 2 steps per run; each run pays LlamaFactory's import and model load in a fresh process.
    result = _train_validate_export(
        tiny_model_dir,
        data_dir,
        tmp_path,
        rows=16,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        disable_gradient_checkpointing=True,
    )
    check, run = result["check"], result["run"]
    assert check.steps == 2 and math.isfinite(check.train_loss)
    assert not any((tmp_path / "validation" / "output").glob("*.safetensors"))  # validation exports nothing
    assert (tmp_path / "validation" / "train.log").is_file()
    assert run.returncode == 0 and run.steps == 2 and math.isfinite(run.train_loss)
    assert (tmp_path / "full" / "llamafactory.yaml").is_file() and (tmp_path / "full" / "command.txt").is_file()
    assert any(p.startswith("step 2/2 loss") for p in result["progress"])
    assert result["progress"][-1].startswith("done: 2/2 steps")
    _assert_loads_and_generates(result["final"], tiny_model_dir)
    export_model(run.output_dir, result["final"], base_model=tiny_model_dir)  # re-export replaces in place
    assert not list(tmp_path.glob(".final*"))


def test_llamafactory_full_dpo_on_the_tiny_model(tmp_path: Path, tiny_model_dir: Path, data_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation run and full run of stage dpo on 8 GSM8K pairs (batch 4: 2 steps), exported like an SFT run."""
    monkeypatch.delenv("LLAMAFACTORY_VERBOSITY", raising=False)  # its info lines say which reference model it used
    result = _train_validate_export(tiny_model_dir, data_dir, tmp_path, rows=8, pairwise=True, stage="dpo",
                                    cutoff_len=512, per_device_train_batch_size=4, learning_rate=1e-3,
                                    disable_gradient_checkpointing=True)
    check, run, progress = result["check"], result["run"], result["progress"]
    print(f"\nDPO on the tiny model: validation run {result['validation_s']:.1f}s, full run {result['full_s']:.1f}s "
          f"(trainer loop {run.train_runtime_s}s)")

    assert check.steps == 2 and math.isfinite(check.train_loss)
    assert run.returncode == 0 and run.steps == 2 and math.isfinite(run.train_loss)
    assert "stage: dpo" in (tmp_path / "full" / "llamafactory.yaml").read_text()
    log = run.log_path.read_text()
    assert "Created reference model from the model itself" in log  # full DPO: a frozen copy as the reference
    logged = [json_line for line in log.splitlines() if (json_line := _log_dict(line)) and "loss" in json_line]
    assert len(logged) == 2  # one per step (logging_steps=1)
    for entry in logged:
        for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                    "logps/chosen", "logps/rejected"):
            assert math.isfinite(float(entry[key])), (key, entry)
    # Step 1 starts at the reference: the policy equals it, so every reward is 0 and the loss is log 2.
    assert float(logged[0]["rewards/chosen"]) == pytest.approx(0.0, abs=1e-6)
    assert float(logged[0]["loss"]) == pytest.approx(math.log(2), abs=1e-3)
    assert float(logged[1]["rewards/margins"]) != 0.0  # the policy moved away from the reference
    assert any(p.startswith("step 2/2 loss") for p in progress) and progress[-1].startswith("done: 2/2 steps")
    _assert_loads_and_generates(result["final"], tiny_model_dir)


@pytest.mark.parametrize("method, stage", [("dpo", "dpo"), ("self_distill", "sft"), ("sft", "sft")])
def test_the_trainer_node_trains_a_dpo_plan_with_stage_dpo(make_context, monkeypatch, method, stage) -> None:
    """The trainer role's recipe follows the built dataset (pairwise for a DPO plan; self-distillation trains with
    SFT); the recipe passes the installed parsers and the progress says the stage. The runs themselves are stubbed
    (the tests above run them)."""
    from conftest import eval_report_stub, plan_of

    from core.handoffs import Best, DatasetManifest, Stage
    from roles import trainer
    from tools.llamafactory import TrainRun

    ctx = make_context()
    seen: list[str] = []
    ctx.progress = seen.append
    recipes: list[TrainConfig] = []

    def validation(cfg, workdir, on_progress=None, **_):
        recipes.append(cfg)
        return TrainRun(0, Path(workdir) / "train.log", 0.69, 1.0, 2, [], Path(cfg.output_dir))

    def full(cfg, workdir, on_progress=None, **_):
        recipes.append(cfg)
        raise TrainingFailed("stubbed", 1, ["the last line"], Path(workdir) / "train.log")

    monkeypatch.setattr(trainer, "validation_run", validation)
    monkeypatch.setattr(trainer, "run_training", full)
    manifest = DatasetManifest(dataset_dir=str(ctx.ws.root / "data"), dataset_name="pref", rows=8, sources=["x"],
                               operations=[], content_sha256="-", with_system=False, attempt=1, method=method,
                               pairwise=method == "dpo")
    state = {"stage": Stage.LOCAL, "iteration": 1, "plan": plan_of().model_copy(update={"method": method}),
             "baseline": eval_report_stub(), "manifest": manifest,
             "best": Best(model_dir=ctx.base_model, score=0.0, iteration=0)}
    out = trainer.node(state, ctx)

    assert out["failure"].startswith("training failed: stubbed")
    assert [c.stage for c in recipes] == [stage, stage]
    prefs = (0.1, "sigmoid") if stage == "dpo" else (None, None)
    assert (recipes[1].pref_beta, recipes[1].pref_loss) == prefs
    assert any(line.startswith(f"validation run ({stage}) from ") for line in seen), seen
    assert any(line.startswith(f"full run ({stage}): lr ") for line in seen), seen


def _log_dict(line: str) -> dict | None:
    """The trainer's per-step log dict ("{'loss': '0.6931', 'rewards/chosen': '0', ...}"), or None."""
    import ast

    line = line.strip()
    if not (line.startswith("{") and line.endswith("}")):
        return None
    try:
        value = ast.literal_eval(line)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, dict) else None


@pytest.mark.slow
def test_llamafactory_lora_on_the_tiny_model_merges_on_export(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    tok = _tokenizer(tiny_model_dir)
    records = gsm8k_records(data_dir, tok, 8, cutoff_len=1024)
    write_llamafactory_dataset(records, tmp_path / "data", "sft", tokenizer=tok, cutoff_len=1024)
    cfg = _config(
        tiny_model_dir,
        tmp_path / "data",
        tmp_path / "run" / "output",
        finetuning_type="lora",
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        disable_gradient_checkpointing=True,
    )
    run = run_training(cfg, tmp_path / "run")
    assert (run.output_dir / "adapter_config.json").is_file()
    final = export_model(run.output_dir, tmp_path / "final", base_model=tiny_model_dir)
    assert not (final / "adapter_config.json").exists()
    assert (run.output_dir / "merge" / "train.log").is_file()
    _assert_loads_and_generates(final, tiny_model_dir)


def test_a_multi_gpu_launch_goes_through_llamafactorys_torchrun_with_the_cluster_variables(tmp_path, monkeypatch):
    """The trainer asks LlamaFactory for torchrun (FORCE_TORCHRUN=1); the multi-node variables reach it untouched."""
    import importlib.metadata

    from tools.llamafactory import check_config, run_training

    fake = _fake_python(tmp_path, f"env > {tmp_path}/env.txt\n")
    monkeypatch.setenv("NNODES", "2")
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.7")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    cfg = TrainConfig(model_name_or_path="m", dataset="d", dataset_dir=str(tmp_path), output_dir=str(tmp_path / "o"))
    monkeypatch.setattr("tools.llamafactory.check_config", lambda cfg: None)  # only the launch is under test here
    run_training(cfg, tmp_path / "work", python=fake, env={"FORCE_TORCHRUN": "1"})
    env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines() if "=" in line)
    assert env["FORCE_TORCHRUN"] == "1" and env["NNODES"] == "2" and env["NODE_RANK"] == "1"
    assert env["MASTER_ADDR"] == "10.0.0.7" and env["CUDA_VISIBLE_DEVICES"] == "2,3"
    # The installed argument parser knows `deepspeed` and goes on to load DeepSpeed itself (the gpu extra).
    ds = cfg.model_copy(update={"deepspeed": str(Path("tools/deepspeed/ds_z2.json").resolve())})
    with pytest.raises(importlib.metadata.PackageNotFoundError, match="deepspeed"):
        check_config(ds)
