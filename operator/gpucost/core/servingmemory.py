"""The GPU memory a model needs to be served: what a compressed model's slice can shrink to.

A replica holds its weights, the KV cache of every sequence it keeps resident, and the engine's
own overhead. The KV cache is 2 (K and V) x layers x KV heads x head dim x bytes per element per
token (``../shared/data/vllm-perf/README.md`` section 2), so at long contexts it outweighs the
weights and an FP8 KV cache matters as much as 4-bit weights. Pure arithmetic on a Hugging Face
``config.json``, so it also prices real shapes (Llama-3.1-70B) without their weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpucost.core.engine import MIB, OVERHEAD_MIB

GRANULE_MIB = 256
"""Slices are recommended in steps of this, so a rounding byte does not make a new slice size."""


@dataclass(frozen=True)
class Shape:
    layers: int
    kv_heads: int
    head_dim: int
    """0 layers for an encoder: it keeps no KV cache between requests."""

    def kv_bytes_per_token(self, kv_bytes_per_element: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * kv_bytes_per_element


def shape(config: Mapping[str, Any]) -> Shape:
    """From a causal LM's config.json (Llama, Qwen, Mistral names); an encoder has no KV cache."""
    if not config.get("is_decoder", True) or config.get("model_type") in {"bert", "roberta"}:
        return Shape(0, 0, 0)
    heads = int(config["num_attention_heads"])
    head_dim = config.get("head_dim") or int(config["hidden_size"]) // heads
    return Shape(
        int(config["num_hidden_layers"]),
        int(config.get("num_key_value_heads") or heads),
        int(head_dim),
    )


def recommended_mib(
    weight_bytes: int, kv_bytes_per_token: int, max_model_len: int, concurrency: int
) -> int:
    """Weights + the KV cache of ``concurrency`` sequences of ``max_model_len`` + the engine's
    overhead, rounded up to the granule."""
    need = weight_bytes + kv_bytes_per_token * max_model_len * concurrency
    return math.ceil((need / MIB + OVERHEAD_MIB) / GRANULE_MIB) * GRANULE_MIB


def weight_bytes(config: Mapping[str, Any], bits: int | None, group_size: int = 128) -> int:
    """What a real shape's weights take from its config alone: every decoder Linear at ``bits``
    (None: bf16) with a 16-bit scale per output channel, or per group of ``group_size`` inputs at
    4 bits (W4A16's preset); embeddings, lm_head and norms stay 16-bit, as llmcompressor leaves
    them."""
    hidden, inter = int(config["hidden_size"]), int(config["intermediate_size"])
    s = shape(config)
    q = int(config["num_attention_heads"]) * s.head_dim
    kv = s.kv_heads * s.head_dim
    linears = [(q, hidden), (kv, hidden), (kv, hidden), (hidden, q), (inter, hidden)]
    linears += [(inter, hidden), (hidden, inter)]
    per_layer = 0
    for rows, cols in linears:
        if bits is None:
            per_layer += rows * cols * 2
        else:
            scales = rows * (math.ceil(cols / group_size) if bits == 4 else 1)
            per_layer += rows * cols * bits // 8 + scales * 2
    tables = 1 if config.get("tie_word_embeddings") else 2
    rest = int(config["vocab_size"]) * hidden * tables + (2 * s.layers + 1) * hidden
    return s.layers * per_layer + rest * 2
