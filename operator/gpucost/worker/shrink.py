"""Smaller dense Hugging Face models, which vLLM serves as is on less memory: structured pruning
(whole MLP channels, or whole layers, which shrink a decoder's KV cache too) and a student with
fewer layers copied from its teacher. Llama-family decoders and BERT encoders alike.

Each makes a new config and copies the kept weights into a model built from it, so the output is
an ordinary checkpoint of the same architecture: no masks, no ``sparsity_config`` (vLLM has no
2:4 kernels any more and refuses one with targets, so unstructured or 2:4 sparsity would save
nothing served).
"""

from __future__ import annotations

import math
from typing import Any

from gpucost.worker.data import WorkerError

CHANNELS = 8
"""MLP widths are kept a multiple of this (what GPU kernels tile by)..."""
GROUP = 128
"""...or of this when the model's width is one and it is wide (real models are): W4A16's group
size, which llmcompressor and vLLM's 4-bit kernels need, so a pruned model can still be
quantized."""


def kept_layers(total: int, keep: int) -> list[int]:
    """``keep`` (fewer than ``total``) layers, evenly spread, always the first and the last (the
    layers whose removal hurts most: the input embedding's and the head's neighbours)."""
    if keep == 1:
        return [0]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def drop_layers(model: Any, keep: int) -> Any:
    """A model with ``keep`` of the decoder layers, their weights copied."""
    config = model.config
    total = config.num_hidden_layers
    if not 1 <= keep < total:
        raise WorkerError(f"keeping {keep} of {total} layers leaves nothing to remove or no model")
    chosen = kept_layers(total, keep)
    small = config.__class__(**{**config.to_dict(), "num_hidden_layers": len(chosen)})
    if getattr(config, "layer_types", None):
        small.layer_types = [config.layer_types[i] for i in chosen]
    state = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        at = _layer_index(parts)
        if at is not None:
            old = int(parts[at])
            if old not in chosen:
                continue
            parts[at] = str(chosen.index(old))
        state[".".join(parts)] = value
    return _built(model, small, state)


def _layer_index(parts: list[str]) -> int | None:
    """Where a weight's name holds its layer number (``model.layers.3.…`` in a Llama,
    ``bert.encoder.layer.3.…`` in a BERT)."""
    for at, part in enumerate(parts[:-1]):
        if part in ("layers", "layer") and parts[at + 1].isdigit():
            return at + 1
    return None


def _mlps(model: Any) -> list[tuple[list[Any], Any]]:
    """Each layer's MLP as (the Linears whose output rows are its channels, the Linear whose
    input columns are): Llama's gate/up and down projections, BERT's intermediate and output."""
    if hasattr(model, "bert"):
        return [
            ([layer.intermediate.dense], layer.output.dense) for layer in model.bert.encoder.layer
        ]
    return [([m.mlp.gate_proj, m.mlp.up_proj], m.mlp.down_proj) for m in model.model.layers]


def prune_mlp(model: Any, amount: float, calibration: list[dict[str, Any]]) -> Any:
    """A model whose MLPs keep the ``1 - amount`` of their channels that carry the most.

    A channel is one output row of the MLP's first Linears (Llama: gate_proj and up_proj; BERT:
    intermediate.dense) and the matching input column of its last (down_proj; output.dense):
    removing them together is what makes the result dense. Its importance is what it adds to the
    layer's output on real text: the RMS of its activation over the calibration examples times
    the L2 norm of its output column (FLAP's and Wanda's measure, per channel). Weight norms
    alone picked worse channels than chance on the tiny Llama. Every layer keeps the same count
    because the config has one intermediate_size.
    """
    import torch

    config = model.config
    width = config.intermediate_size
    step = GROUP if width % GROUP == 0 and width >= 8 * GROUP else CHANNELS
    keep = max(step, round(width * (1 - amount) / step) * step)
    if keep >= width:
        raise WorkerError(f"prune.amount {amount} removes no MLP channel of {width}")
    mlps = _mlps(model)
    energy = _channel_energy(model, [last for _, last in mlps], calibration)
    small = config.__class__(**{**config.to_dict(), "intermediate_size": keep})
    state = dict(model.state_dict())
    names = {m: name for name, m in model.named_modules()}
    for (firsts, last), squares in zip(mlps, energy, strict=True):
        score = squares.sqrt() * last.weight.float().norm(dim=0)
        rows = torch.topk(score.to(last.weight.device), keep).indices.sort().values
        for linear in firsts:
            state[f"{names[linear]}.weight"] = linear.weight[rows].clone()
            if linear.bias is not None:
                state[f"{names[linear]}.bias"] = linear.bias[rows].clone()
        state[f"{names[last]}.weight"] = last.weight[:, rows].clone()
    return _built(model, small, state)


def _channel_energy(model: Any, lasts: list[Any], calibration: list[dict[str, Any]]) -> list[Any]:
    """Per MLP, the mean square of each channel's activation (the last Linear's input) over the
    calibration examples' tokens."""
    import torch

    sums = [torch.zeros(last.in_features) for last in lasts]
    counts = [0] * len(lasts)

    def hook(i: int) -> Any:
        def seen(_: Any, inputs: tuple[Any, ...]) -> None:
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            sums[i] += (x * x).sum(0).cpu()
            counts[i] += x.shape[0]

        return seen

    handles = [last.register_forward_pre_hook(hook(i)) for i, last in enumerate(lasts)]
    model.eval()
    try:
        with torch.no_grad():
            for batch in _batches(calibration):
                model(**{k: v.to(model.device) for k, v in batch.items() if k != "labels"})
    finally:
        for handle in handles:
            handle.remove()
    if not all(counts):
        raise WorkerError("prune: the dataset's training split gave no text to measure with")
    return [s / n for s, n in zip(sums, counts, strict=True)]


def _batches(examples: list[dict[str, Any]], size: int = 8) -> Any:
    import torch

    for start in range(0, len(examples), size):
        chunk = examples[start : start + size]
        yield {k: torch.stack([e[k] for e in chunk]) for k in chunk[0]}


def student_layers(config: Any, layers: int | None) -> int:
    """The student's depth: what was asked, else half the teacher's (DistilBERT's choice)."""
    total = config.num_hidden_layers
    keep = layers if layers is not None else max(1, math.ceil(total / 2))
    if keep >= total:
        raise WorkerError(f"distill.studentLayers {keep}: the teacher has only {total} layers")
    return keep


def _built(model: Any, config: Any, state: dict[str, Any]) -> Any:
    """A model of ``model``'s class from ``config`` holding ``state`` (every weight of it)."""
    weight = next(model.parameters())
    small = model.__class__(config).to(device=weight.device, dtype=weight.dtype)
    loaded = small.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = [k for k in loaded.missing_keys if k not in tied]
    if missing or loaded.unexpected_keys:
        raise WorkerError(
            f"the smaller model does not match its weights (missing {missing[:3]}, "
            f"unexpected {loaded.unexpected_keys[:3]})"
        )
    return small
