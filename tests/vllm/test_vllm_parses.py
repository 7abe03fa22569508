"""vLLM's own parser accepts every checkpoint the worker writes: ``scripts/test-vllm.sh``.

vLLM runs in a virtualenv of its own (``GPUCOST_VLLM_PYTHON``; it pins an older compressed-tensors
than llmcompressor, as the serving and worker images do), so what is checked is the checkpoint on
disk, written by one library version and read by another, exactly as in production. Its
``ModelConfig`` resolves the architecture, the quantization method (and, through vLLM's
compressed-tensors config, each scheme and the KV-cache scheme) before any weight is loaded: a
format the server refuses fails here, without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.unit.compress_cli import compressed

PARSE = """
import json, sys
from vllm.config import ModelConfig
from vllm.model_executor.layers.quantization import get_quantization_config
out = {}
for path in sys.argv[1:]:
    try:
        m = ModelConfig(model=path, tokenizer=path)
        seen = {"quantization": m.quantization, "architectures": m.architectures,
                "layers": m.hf_config.num_hidden_layers}
        q = getattr(m.hf_config, "quantization_config", None)
        if q is not None:
            parsed = get_quantization_config(m.quantization).from_config(
                q if isinstance(q, dict) else q.to_dict())
            seen["kv_cache_scheme"] = getattr(parsed, "kv_cache_scheme", None)
            seen["ignore"] = list(getattr(parsed, "ignore", []))
        out[path] = seen
    except Exception as e:  # every refusal is a result to report, not a crash of the check
        out[path] = {"error": f"{type(e).__name__}: {e}"[:2000]}
print("RESULT " + json.dumps(out, default=str))
"""
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "vllm-parse.json"
"""What the last run saw, kept in the repository as the record README cites."""
LLAMA = {
    "W4A16": {"quantize": {"scheme": "W4A16", "calibrationSamples": 32}},
    "W8A8": {"quantize": {"scheme": "W8A8", "calibrationSamples": 32}},
    "FP8_DYNAMIC": {"quantize": {"scheme": "FP8_DYNAMIC", "calibrationSamples": 0}},
    "W8A16-FP8KV": {"quantize": {"scheme": "W8A16", "kvCacheScheme": "FP8"}},
    "prune-mlp": {"prune": {"amount": 0.5, "fineTuneSteps": 0}},
    "distill": {"distill": {"steps": 10}},
}
BERT = {
    "bert-W4A16": {"quantize": {"scheme": "W4A16", "calibrationSamples": 32}},
    "bert-prune-mlp": {"prune": {"amount": 0.5, "fineTuneSteps": 0}},
}


@pytest.fixture(scope="module")
def parsed(llama: Path, bert: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    python = os.environ.get("GPUCOST_VLLM_PYTHON")
    if not python:
        pytest.fail("GPUCOST_VLLM_PYTHON is not set: run scripts/test-vllm.sh")
    root = tmp_path_factory.mktemp("checkpoints")
    serving = {"maxModelLen": 256, "concurrency": 4}
    jobs = [(name, llama, llama.parent / "stdlib-docs.txt", m) for name, m in LLAMA.items()]
    jobs += [(name, bert, bert.parent / "stdlib-topics.jsonl", m) for name, m in BERT.items()]
    written = {}
    for name, model, data, method in jobs:
        compressed(model, data, root / name, method, serving)
        written[name] = root / name
    out = subprocess.run(
        [python, "-c", PARSE, *(str(p) for p in written.values())],
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, f"vLLM's parser printed no result:\n{out.stderr[-3000:]}"
    by_path = json.loads(line.removeprefix("RESULT "))
    results = {name: by_path[str(path)] for name, path in written.items()}
    where = Path(os.environ.get("GPUCOST_VLLM_RESULTS", RESULTS))
    where.write_text(json.dumps(results, indent=1))
    return results


def test_every_checkpoint_is_accepted(parsed):
    refused = {name: r["error"] for name, r in parsed.items() if "error" in r}
    assert not refused


def test_quantized_checkpoints_are_read_as_compressed_tensors_with_their_head_kept(parsed):
    for name in ("W4A16", "W8A8", "FP8_DYNAMIC", "W8A16-FP8KV"):
        assert parsed[name]["quantization"] == "compressed-tensors"
        assert "lm_head" in parsed[name]["ignore"]
    assert parsed["bert-W4A16"]["quantization"] == "compressed-tensors"
    assert "classifier" in parsed["bert-W4A16"]["ignore"]
    assert parsed["W8A16-FP8KV"]["kv_cache_scheme"] is not None
    assert parsed["W4A16"]["kv_cache_scheme"] is None


def test_pruned_and_distilled_checkpoints_are_dense_and_smaller(parsed):
    for name in ("prune-mlp", "distill", "bert-prune-mlp"):
        assert parsed[name]["quantization"] is None
    assert parsed["distill"]["layers"] == 2 and parsed["prune-mlp"]["layers"] == 4
    assert parsed["bert-prune-mlp"]["architectures"] == ["BertForSequenceClassification"]
