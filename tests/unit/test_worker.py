"""The CompressionJob worker on a real small model: an MLP trained here on scikit-learn's digits
(no downloads). Each method must shrink it for real and keep its accuracy; a killed run resumes
from its checkpoint to the result of an uninterrupted one; bad input is one line and exit 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gpucost.worker.data import load_dataset, mlp
from gpucost.worker.main import compress
from gpucost.worker.methods import Checkpoints, cross_entropy, train
from tests.unit.compress_cli import run_compress

DIGITS = "sklearn:digits"
PRUNE = {"prune": {"amount": 0.5}}


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory) -> str:
    """A 64-512-512-10 MLP trained for 8 epochs (~97 % on the held-out fifth), saved as
    TorchScript."""
    data = load_dataset(DIGITS)
    torch.manual_seed(0)
    model = mlp([64, 512, 512, 10])
    train(model, data, 8, cross_entropy, Checkpoints(None), seed=0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.jit.save(torch.jit.trace(model.eval(), data.eval_x[:1]), str(path))
    return f"file://{path}"


def run(model_uri: str, tmp_path: Path, method: dict, **kw) -> dict:
    out = tmp_path / "out"
    results = compress(
        model_uri, DIGITS, str(out), method, str(tmp_path / "ckpt"), kw.get("every", 20), 0, {}
    )
    assert (
        json.loads((out / "results.json").read_text()) == results
        and (out / "model.pt").stat().st_size > 0
    )
    return results


def test_unstructured_pruning_is_sparse_and_smaller_stored_sparse(model_uri, tmp_path):
    r = run(model_uri, tmp_path, {"prune": {"amount": 0.8, "fineTuneEpochs": 1}})
    assert (
        r["sparsity"] == pytest.approx(0.8, abs=0.01) and r["steps"] == 23
    )  # one epoch of 1,437 samples
    assert r["after"]["compactBytes"] < 0.5 * r["before"]["bytes"] and r["accuracyChange"] > -2


def test_structured_pruning_leaves_a_smaller_dense_model(model_uri, tmp_path):
    r = run(
        model_uri, tmp_path, {"prune": {"amount": 0.5, "structured": True, "fineTuneEpochs": 2}}
    )
    assert r["after"]["bytes"] < 0.35 * r["before"]["bytes"] and r["accuracyChange"] > -2


def test_distillation_trains_a_half_width_student(model_uri, tmp_path):
    r = run(model_uri, tmp_path, {"distill": {"epochs": 8, "temperature": 4, "alpha": 0.7}})
    assert r["after"]["bytes"] < 0.35 * r["before"]["bytes"] and r["accuracyChange"] > -2
    assert r["steps"] == 8 * 23 and r["resumedFromStep"] == 0


def test_a_killed_distillation_resumes_from_its_checkpoint_to_the_same_result(model_uri, tmp_path):
    method = {"distill": {"epochs": 10}}
    whole = run(model_uri, tmp_path / "whole", method)
    ckpt = tmp_path / "killed" / "ckpt"
    args = [
        sys.executable,
        "-m",
        "gpucost",
        "compress",
        "--model",
        model_uri,
        "--dataset",
        DIGITS,
        "--output",
        str(tmp_path / "killed" / "out"),
        "--method",
        json.dumps(method),
        "--checkpoint-dir",
        str(ckpt),
        "--checkpoint-every",
        "20",
    ]
    worker = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while (
        not (ckpt / "checkpoint.pt").exists()
        or torch.load(ckpt / "checkpoint.pt", weights_only=False)["step"] < 60
    ):
        assert worker.poll() is None and time.monotonic() < deadline, (
            "the worker ended before it was killed"
        )
        time.sleep(0.05)  # polling a file the worker writes; the kill is the event under test
    os.killpg(worker.pid, signal.SIGKILL)  # the spot node is gone
    worker.wait()
    resumed = run(model_uri, tmp_path / "killed", method)
    assert resumed["resumedFromStep"] >= 60 and resumed["steps"] == whole["steps"] == 230
    assert resumed["after"]["accuracy"] == pytest.approx(whole["after"]["accuracy"], abs=0.3)
    assert resumed["after"]["loss"] == pytest.approx(whole["after"]["loss"], abs=1e-3)


@pytest.mark.parametrize(
    "model,dataset,method,line",
    [
        ("missing.pt", DIGITS, PRUNE, "model file://{d}/missing.pt: no such file"),
        (
            "{model}",
            "sklearn:iris",
            PRUNE,
            "model {model}: takes 64 features, the dataset has 4",
        ),
        ("{model}", DIGITS, {"squash": {}}, "method.squash: Extra inputs are not permitted"),
        (
            "{model}",
            "s3://bucket/data",
            PRUNE,
            "s3://bucket/data: only local paths and file:// are read here",
        ),
        (
            "conv.pt",
            DIGITS,
            PRUNE,
            "model file://{d}/conv.pt: incompatible: this worker compresses models made of Linear "
            "layers",
        ),
        (
            "{model}",
            DIGITS,
            {"quantize": {}},
            "model {model}: not a Hugging Face model directory (no config.json in it)",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_1(model_uri, tmp_path, model, dataset, method, line):
    torch.save(torch.nn.Conv2d(1, 4, 3).state_dict(), tmp_path / "conv.pt")
    model = model.format(model=model_uri) if "{model}" in model else f"file://{tmp_path}/{model}"
    out, log = run_compress(tmp_path, model, dataset, method, timeout=120)
    expected = line.format(d=tmp_path, model=model_uri)
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert out.stderr.strip().startswith(expected) and log.startswith(expected)
