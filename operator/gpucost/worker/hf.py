"""Hugging Face models in the worker: which ones it takes, the text it calibrates and judges them
on, and the numbers results.json reports (held-out perplexity, the bytes a server loads)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpucost.worker.data import WorkerError

CAUSAL = frozenset(
    {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}
)
"""Causal LM architectures vLLM serves in compressed-tensors format and llmcompressor knows."""
HELD_OUT = 0.1


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def config_of(path: Path, uri: str) -> dict[str, Any]:
    """The model's config.json, or one line saying why it is not a model this worker takes."""
    if not path.exists():
        raise WorkerError(f"model {uri}: no such directory")
    if not is_model_dir(path):
        raise WorkerError(f"model {uri}: not a Hugging Face model directory (no config.json in it)")
    try:
        config = json.loads((path / "config.json").read_text())
    except ValueError as e:
        raise WorkerError(f"model {uri}: config.json is not JSON ({e})") from None
    arch = next(iter(config.get("architectures") or []), None)
    if arch not in CAUSAL:
        raise WorkerError(
            f"model {uri}: architecture {arch or 'unknown'} is not supported "
            f"(supported: {', '.join(sorted(CAUSAL))})"
        )
    return config


@dataclass(frozen=True)
class Texts:
    train: list[str]
    held_out: list[str]


def texts(path: Path, uri: str, seed: int) -> Texts:
    """A .txt of paragraphs (blank-line separated) or a .jsonl with a ``text`` field, shuffled
    with the seed and split: the same split on every attempt, so a resumed job is judged on the
    same held-out text."""
    if not path.is_file():
        raise WorkerError(f"dataset {uri}: no such file")
    raw = path.read_text(errors="replace")
    if path.suffix == ".jsonl":
        items = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(str(json.loads(line)["text"]))
            except (ValueError, KeyError, TypeError):
                raise WorkerError(
                    f"dataset {uri}: line {n} is not JSON with a text field"
                ) from None
    elif path.suffix == ".txt":
        items = [p.strip() for p in raw.split("\n\n") if p.strip()]
    else:
        raise WorkerError(f"dataset {uri}: a .txt of paragraphs or a .jsonl with a text field")
    if len(items) < 20:
        raise WorkerError(f"dataset {uri}: {len(items)} texts; at least 20 are needed to split")
    random.Random(seed).shuffle(items)
    cut = max(1, int(len(items) * HELD_OUT))
    return Texts(train=items[cut:], held_out=items[:cut])


def perplexity(model: Any, tokenizer: Any, items: list[str], max_len: int) -> float:
    """exp of the mean next-token loss over every held-out token (token-weighted)."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for text in items:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_len)
            n = ids["input_ids"].shape[1] - 1
            if n < 1:
                continue
            out = model(**ids, labels=ids["input_ids"])
            total += float(out.loss) * n
            count += n
    if not count:
        raise WorkerError("dataset: the held-out texts have no tokens to score")
    return math.exp(total / count)


def tensor_bytes(folder: Path) -> int:
    """Bytes of the tensors in a checkpoint's safetensors files (what a server loads), without
    their JSON headers."""
    total = 0
    for file in folder.glob("*.safetensors"):
        with file.open("rb") as f:
            header = int.from_bytes(f.read(8), "little")
        total += file.stat().st_size - 8 - header
    return total


def bf16_bytes(model: Any) -> int:
    """What the model's weights take served in bf16 (tied weights counted once)."""
    seen = {p.data_ptr(): p.numel() for p in model.parameters()}
    return 2 * sum(seen.values())
