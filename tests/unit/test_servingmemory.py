"""The serving-memory arithmetic against the figures ../shared/data/vllm-perf publishes."""

from gpucost.core.engine import OVERHEAD_MIB
from gpucost.core.servingmemory import GRANULE_MIB, Shape, recommended_mib, shape

LLAMA_31_8B = {  # config.json of meta-llama/Llama-3.1-8B (the fields the arithmetic reads)
    "model_type": "llama",
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_hidden_layers": 32,
}
QWEN_25_7B = {
    "model_type": "qwen2",
    "hidden_size": 3584,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "num_hidden_layers": 28,
}


def test_kv_bytes_per_token_match_the_published_table():
    assert shape(LLAMA_31_8B).kv_bytes_per_token() == 131_072  # 128 KiB
    assert shape(QWEN_25_7B).kv_bytes_per_token() == 57_344  # 56 KiB
    assert shape(LLAMA_31_8B).kv_bytes_per_token(1) == 65_536  # an FP8 KV cache halves it
    assert shape({"model_type": "bert", "hidden_size": 768}) == Shape(0, 0, 0)


def test_the_recommended_slice_is_weights_kv_and_overhead_rounded_up():
    kv = shape(LLAMA_31_8B).kv_bytes_per_token()
    # 8 sequences of 4,096 tokens at 128 KiB: 4 GiB of KV; 1 GiB of weights; then the overhead
    mib = recommended_mib(1 << 30, kv, 4096, 8)
    assert mib == 1024 + 4096 + OVERHEAD_MIB
    assert recommended_mib((1 << 30) + 1, kv, 4096, 8) == mib + GRANULE_MIB
    fp8 = recommended_mib(1 << 30, shape(LLAMA_31_8B).kv_bytes_per_token(1), 4096, 8)
    assert fp8 == mib - 2048


def test_weights_from_the_config_alone_match_the_published_checkpoint_sizes():
    from gpucost.core.servingmemory import weight_bytes

    llama = {**LLAMA_31_8B, "intermediate_size": 14336, "vocab_size": 128256}
    bf16 = weight_bytes(llama, None)
    assert bf16 == 8_030_261_248 * 2  # Llama-3.1-8B's 8,030,261,248 parameters in bf16
    w4 = weight_bytes(llama, 4)
    # the published W4A16 checkpoints of this model are ~5.7 GB: 4-bit decoder + 16-bit tables
    assert 5.4e9 < w4 < 6.0e9 and w4 < 0.4 * bf16
    assert 0.5 * bf16 < weight_bytes(llama, 8) < 0.6 * bf16
