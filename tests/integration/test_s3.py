"""``s3://`` models, datasets and outputs through a real S3-compatible store: SeaweedFS on
loopback (devcluster.objectstore), reached by boto3 the way a job's pod reaches it (the Secret's
keys and AWS_ENDPOINT_URL in the worker's environment), with no AWS configuration of the machine
leaking in."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import pytest
import torch

from gpucost.devcluster import tinymodels
from gpucost.devcluster.objectstore import ObjectStore
from tests.unit.compress_cli import run_compress

METHOD = {"quantize": {"scheme": "W8A16", "calibrationSamples": 0, "maxSeqLength": 128}}
NO_AWS_CONFIG = {
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    s = ObjectStore(tmp_path_factory.mktemp("seaweedfs"))
    s.start()
    s.bucket("models")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def uploaded(store: ObjectStore) -> Path:
    """The tiny Llama and its text under s3://models/tiny/ and s3://models/text/."""
    torch.set_num_threads(1)
    llama = tinymodels.causal_lm(progress=True)
    client = store.client()
    for file in llama.iterdir():
        client.upload_file(str(file), "models", f"tiny/{file.name}")
    client.upload_file(str(llama.parent / "stdlib-docs.txt"), "models", "text/docs.txt")
    return llama


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)


def test_a_model_in_s3_is_quantized_into_s3(store, uploaded, tmp_path, clean_env):
    out, log = run_compress(
        tmp_path,
        "s3://models/tiny",
        "s3://models/text/docs.txt",
        METHOD,
        timeout=600,
        output="s3://models/compressed/w8a16/",
        GPUCOST_SCRATCH=str(tmp_path / "scratch"),
        **store.env(),
        **NO_AWS_CONFIG,
    )
    assert out.returncode == 0, out.stderr
    said = json.loads(log)
    client = store.client()
    listed = client.list_objects_v2(Bucket="models", Prefix="compressed/w8a16/")
    keys = {o["Key"].removeprefix("compressed/w8a16/") for o in listed["Contents"]}
    assert {"config.json", "results.json", "tokenizer.json"} <= keys
    assert any(k.endswith(".safetensors") for k in keys)
    body = client.get_object(Bucket="models", Key="compressed/w8a16/config.json")["Body"].read()
    groups = json.loads(body)["quantization_config"]["config_groups"]
    assert {g["weights"]["num_bits"] for g in groups.values()} == {8}
    results = json.loads(
        client.get_object(Bucket="models", Key="compressed/w8a16/results.json")["Body"].read()
    )
    assert results["weightRatio"] < 0.7
    assert said["results"]["weightBytesAfter"] == results["after"]["weightBytes"]
    # what was uploaded is the checkpoint the worker judged, byte for byte
    staged = tmp_path / "scratch" / "gpucost-staging"
    (folder,) = [p for p in staged.iterdir() if (p / "out" / "config.json").exists()]
    assert (folder / "out" / "config.json").read_bytes() == body


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({}, "s3://models/tiny: no credentials (give the job spec.credentialsSecret"),
        (
            {"GPUCOST_CREDENTIALS_SECRET": "team-s3"},
            "s3://models/tiny: no credentials (Secret team-s3 does not exist or lacks",
        ),
    ],
)
def test_missing_credentials_are_one_line_naming_what_to_fix(store, tmp_path, clean_env, env, said):
    out, log = run_compress(
        tmp_path,
        "s3://models/tiny",
        "s3://models/text/docs.txt",
        METHOD,
        timeout=300,
        AWS_ENDPOINT_URL=store.endpoint,
        **NO_AWS_CONFIG,
        **env,
    )
    assert out.returncode == 1
    assert log.startswith(said) and "\n" not in log.strip()


def test_a_wrong_key_and_a_missing_prefix_are_the_store_s_own_words(
    store, uploaded, tmp_path, clean_env
):
    wrong = {**store.env(), "AWS_SECRET_ACCESS_KEY": "not-the-key"}
    out, log = run_compress(
        tmp_path,
        "s3://models/tiny",
        "s3://models/text/docs.txt",
        METHOD,
        300,
        **wrong,
        **NO_AWS_CONFIG,
    )
    assert out.returncode == 1 and log.startswith("s3://models/tiny: SignatureDoesNotMatch")
    out, log = run_compress(
        tmp_path,
        "s3://models/nothing-here",
        "s3://models/text/docs.txt",
        METHOD,
        300,
        **store.env(),
        **NO_AWS_CONFIG,
    )
    assert out.returncode == 1
    assert log == "s3://models/nothing-here: no such object or prefix in bucket models"
