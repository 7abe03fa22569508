"""The worker's URIs that need no server to judge: malformed ones, the Hub when it cannot be
reached (these machines are offline, as many clusters are), and where remote outputs are staged."""

from __future__ import annotations

import socket

import pytest

from gpucost.worker import storage
from gpucost.worker.data import WorkerError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_an_unreachable_hub_is_one_line_naming_the_repo_and_the_endpoint(monkeypatch, tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv(storage.SCRATCH, str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(WorkerError) as e:
        storage.fetch("hf://meta-llama/Llama-3.1-8B@main")
    assert str(e.value).startswith(
        f"hf://meta-llama/Llama-3.1-8B@main: the Hub at {endpoint} cannot be reached ("
    )
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("call", "uri", "said"),
    [
        (storage.fetch, "hf://just-a-name", "name a Hub repository as hf://org/name[@revision]"),
        (storage.fetch, "gs://bucket/model", "unsupported scheme (use file://, s3:// or hf://)"),
        (storage.fetch, "s3:///model", "no bucket (s3://bucket/prefix)"),
        (storage.output, "hf://org/name", "outputs go to file:// or s3://, not the Hub"),
        (storage.output, "s3://", "no bucket (s3://bucket/prefix)"),
    ],
)
def test_malformed_uris_fail_before_any_work(call, uri, said):
    with pytest.raises(WorkerError) as e:
        call(uri)
    assert str(e.value) == f"{uri}: {said}"


def test_local_uris_are_used_in_place_and_remote_outputs_are_staged(monkeypatch, tmp_path):
    assert storage.fetch("file:///data/models/x") == storage.local("/data/models/x")
    monkeypatch.setenv(storage.SCRATCH, str(tmp_path))
    staged = storage.output("s3://bucket/out/")
    assert staged.is_relative_to(tmp_path) and staged != storage.output("s3://bucket/other/")
    assert storage.output("/data/out") == storage.local("file:///data/out")
