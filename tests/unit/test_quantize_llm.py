"""Quantizing a real (tiny) Hugging Face Llama through llmcompressor: a ~1 M-parameter model
trained here on the standard library's docstrings (devcluster.tinymodels, cached outside the repo;
about 5 minutes the first time on one core). Each scheme must shrink the weights a server loads
for real, keep the held-out perplexity within a bound, and write a checkpoint that transformers
reloads and whose config names the scheme, with lm_head left in 16 bits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpucost.core.servingmemory import shape
from tests.unit.compress_cli import compressed, reloaded_llama, run_compress

SERVING = {"maxModelLen": 256, "concurrency": 4}


def run(llama: Path, tmp_path: Path, quantize: dict) -> dict:
    method = {"quantize": {"calibrationSamples": 64, "maxSeqLength": 128, **quantize}}
    return compressed(llama, llama.parent / "stdlib-docs.txt", tmp_path / "out", method, SERVING)


def reloaded_config(llama: Path, out: Path, results: dict) -> dict:
    """The checkpoint's quantization_config, once it reloaded to the reported perplexity
    (compressed-tensors decompresses it on CPU)."""
    return reloaded_llama(llama, out, results)["quantization_config"]


def weight_bits(config: dict) -> set[int]:
    return {g["weights"]["num_bits"] for g in config["config_groups"].values()}


def test_w4a16_gptq_is_under_half_of_bf16_and_within_10_percent_perplexity(llama, tmp_path):
    r = run(llama, tmp_path, {"scheme": "W4A16"})
    assert r["weightRatio"] < 0.5 and r["after"]["weightBytes"] < 0.5 * r["before"]["weightBytes"]
    # the teacher learned something (a uniform guess over 1,024 tokens scores 1,024)
    assert r["before"]["perplexity"] < 100
    assert r["perplexityIncreasePercent"] < 10  # GPTQ's published 4-bit loss is a few percent
    config = reloaded_config(llama, tmp_path / "out", r)
    assert config["quant_method"] == "compressed-tensors" and weight_bits(config) == {4}
    assert "lm_head" in config["ignore"]
    assert r["serving"]["memoryMiB"] <= r["serving"]["bf16MemoryMiB"]


def test_w8a8_smoothquant_gptq_is_under_70_percent_within_5_percent(llama, tmp_path):
    r = run(llama, tmp_path, {"scheme": "W8A8"})
    assert r["weightRatio"] < 0.7 and r["perplexityIncreasePercent"] < 5
    config = reloaded_config(llama, tmp_path / "out", r)
    groups = config["config_groups"].values()
    assert weight_bits(config) == {8} and all(g["input_activations"] for g in groups)


def test_fp8_dynamic_needs_no_calibration_and_is_under_70_percent(llama, tmp_path):
    r = run(llama, tmp_path, {"scheme": "FP8_DYNAMIC", "calibrationSamples": 0})
    assert r["weightRatio"] < 0.7 and r["perplexityIncreasePercent"] < 5
    config = reloaded_config(llama, tmp_path / "out", r)
    (group,) = config["config_groups"].values()
    assert group["weights"]["type"] == "float" and group["input_activations"]["dynamic"] is True


def test_an_fp8_kv_cache_is_in_the_checkpoint_and_halves_the_kv_in_the_slice(llama, tmp_path):
    r = run(llama, tmp_path, {"scheme": "W8A16", "kvCacheScheme": "FP8"})
    config = reloaded_config(llama, tmp_path / "out", r)
    kv = config["kv_cache_scheme"]
    assert kv["num_bits"] == 8 and kv["type"] == "float"
    bf16 = shape(json.loads((llama / "config.json").read_text())).kv_bytes_per_token()
    assert r["serving"]["kvBytesPerToken"] * 2 == bf16


@pytest.mark.parametrize(
    "prepare,method,line",
    [
        (
            lambda d: (d / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}'),
            {"quantize": {}},
            "model file://{d}: architecture GPT2LMHeadModel is not supported (supported: "
            "BertForSequenceClassification, LlamaForCausalLM, MistralForCausalLM, "
            "Qwen2ForCausalLM, Qwen3ForCausalLM)",
        ),
        (
            None,
            {"quantize": {"scheme": "W3A16"}},
            "method.quantize.scheme: Input should be 'W4A16', 'W8A16', 'W8A8' or 'FP8_DYNAMIC'",
        ),
        (
            None,
            {"quantize": {"kvCacheScheme": "FP8", "calibrationSamples": 0}},
            "quantize: an FP8 kvCacheScheme needs calibrationSamples above 0",
        ),
        (
            None,
            {"quantize": {"calibrationSamples": 4000}},
            "quantize: calibrationSamples is 4000, the dataset's training split has",
        ),
    ],
)
def test_bad_input_is_one_clear_line(llama, tmp_path, prepare, method, line):
    model = llama
    if prepare is not None:
        model = tmp_path / "model"
        model.mkdir()
        prepare(model)
    dataset = str(llama.parent / "stdlib-docs.txt")
    out, log = run_compress(
        tmp_path, f"file://{model}", dataset, method, timeout=300, OMP_NUM_THREADS="1"
    )
    said = out.stderr.strip().splitlines()
    assert out.returncode == 1 and said and said[-1].startswith(line.format(d=model))
    assert log.startswith(line.format(d=model))
