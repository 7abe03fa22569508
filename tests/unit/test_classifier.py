"""Compressing a real (tiny) BERT classifier (which of 28 standard-library modules an 8-word window
of a docstring comes from; about 61 % held out): quality is held-out accuracy, the head and pooler
stay in 16 bits, pruning and distillation leave a smaller dense BERT, and the methods can be told
apart by what they cost in accuracy (one held-out text is 0.34 points). The checkpoint reloads
with transformers to the accuracy the worker reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpucost.worker import hf
from tests.unit.compress_cli import compressed, run_compress

SERVING = {"maxModelLen": 128, "concurrency": 16}


def run(bert: Path, tmp_path: Path, name: str, method: dict) -> dict:
    return compressed(bert, bert.parent / "stdlib-topics.jsonl", tmp_path / name, method, SERVING)


def reloaded(bert: Path, out: Path, results: dict) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = json.loads((bert / "config.json").read_text())
    data = hf.texts(bert.parent / "stdlib-topics.jsonl", "topics", 0, config["label2id"])
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    again = hf.accuracy(model, tokenizer, data.held_out, data.held_out_labels, 128)
    assert again == pytest.approx(results["after"]["accuracy"], abs=0.005)
    return json.loads((out / "config.json").read_text())


def test_quantizing_keeps_the_head_and_pooler_and_costs_a_weak_model_little(bert, tmp_path):
    w8 = run(bert, tmp_path, "w8", {"quantize": {"scheme": "W8A16", "calibrationSamples": 0}})
    # 28 classes: chance is 3.6 %; far short of 100 % so that a loss can show
    assert 0.4 < w8["before"]["accuracy"] < 0.8
    assert w8["weightRatio"] < 0.7 and w8["accuracyChangePoints"] > -1
    config = reloaded(bert, tmp_path / "w8", w8)["quantization_config"]
    assert {"classifier", "bert.pooler.dense"} <= set(config["ignore"])
    assert w8["serving"]["kvBytesPerToken"] == 0  # an encoder keeps no KV cache
    w4 = run(bert, tmp_path, "w4", {"quantize": {"scheme": "W4A16"}})
    # the embeddings (a third of this model) stay 16-bit, so 4 bits is not a quarter
    assert w4["weightRatio"] < 0.5 and w4["accuracyChangePoints"] > -3


def test_pruning_leaves_a_narrower_dense_bert(bert, tmp_path):
    teacher = json.loads((bert / "config.json").read_text())
    r = run(bert, tmp_path, "cut", {"prune": {"amount": 0.75, "fineTuneSteps": 0}})
    config = reloaded(bert, tmp_path / "cut", r)
    assert config["intermediate_size"] == teacher["intermediate_size"] // 4
    assert "quantization_config" not in config and r["weightRatio"] < 0.65
    # measured: -1.7 points; the channels kept are the ones the text uses
    assert r["accuracyChangePoints"] > -5


def test_a_distilled_student_beats_the_same_student_trained_on_the_labels_alone(bert, tmp_path):
    rate = {"learningRate": 3e-4}
    half = {"prune": {"target": "layers", "amount": 0.5, "fineTuneSteps": 150, **rate}}
    plain = run(bert, tmp_path, "plain", half)
    student = run(bert, tmp_path, "student", {"distill": {"steps": 150, **rate}})
    assert reloaded(bert, tmp_path / "student", student)["num_hidden_layers"] == 2
    assert student["weightRatio"] == plain["weightRatio"] < 0.65
    # measured: -6.6 points distilled, -9.0 on the labels alone
    assert student["after"]["accuracy"] > plain["after"]["accuracy"]
    assert student["accuracyChangePoints"] > -12


@pytest.mark.parametrize(
    "rows,line",
    [
        (
            [{"text": "a docstring", "label": "nonsense"}] * 30,
            "dataset {d}: text 1's label 'nonsense' is not one of the model's classes (argparse, "
            "asyncio,",
        ),
        (
            [{"text": "a docstring"}] * 30,
            "dataset {d}: line 1 is not JSON with text and label fields",
        ),
    ],
)
def test_a_dataset_without_the_model_s_labels_is_one_clear_line(bert, tmp_path, rows, line):
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out, log = run_compress(
        tmp_path,
        f"file://{bert}",
        str(data),
        {"prune": {"amount": 0.5}},
        300,
        OMP_NUM_THREADS="1",
    )
    assert out.returncode == 1 and log.startswith(line.format(d=data)) and "\n" not in log
