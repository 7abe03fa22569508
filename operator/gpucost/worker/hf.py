"""Hugging Face models in the worker: which ones it takes, the text it calibrates and judges them
on, and the numbers results.json reports (held-out perplexity for a causal LM, held-out accuracy
for a classifier, the bytes a server loads)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpucost.worker.data import WorkerError, first_line

CAUSAL = frozenset(
    {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}
)
"""Causal LM architectures vLLM serves in compressed-tensors format and llmcompressor knows."""
CLASSIFIERS = frozenset({"BertForSequenceClassification"})
"""Encoder classifiers (vLLM serves them as pooling models)."""
HELD_OUT = 0.1


def architecture(config: dict[str, Any]) -> str | None:
    """The class a config.json names first (what transformers and vLLM build)."""
    return next(iter(config.get("architectures") or []), None)


def is_classifier(config: dict[str, Any]) -> bool:
    return architecture(config) in CLASSIFIERS


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
    arch = architecture(config)
    if arch not in CAUSAL | CLASSIFIERS:
        raise WorkerError(
            f"model {uri}: architecture {arch or 'unknown'} is not supported "
            f"(supported: {', '.join(sorted(CAUSAL | CLASSIFIERS))})"
        )
    return config


@dataclass(frozen=True)
class Texts:
    train: list[str]
    held_out: list[str]
    train_labels: list[int] | None = None
    """A classifier's class ids, one per text (None for a causal LM's plain text)."""
    held_out_labels: list[int] | None = None


def texts(path: Path, uri: str, seed: int, label2id: dict[str, int] | None = None) -> Texts:
    """A .txt of paragraphs (blank-line separated), a .jsonl with a ``text`` field (and, for a
    classifier, a ``label``: a class id or a name from the model's ``label2id``) or a ``datasets``
    folder with those columns, shuffled with the seed and split: the same split on every
    attempt, so a resumed job is judged on the same held-out text."""
    labelled = label2id is not None
    if path.is_dir():
        rows = _saved_dataset(path, uri, labelled)
    elif not path.is_file():
        raise WorkerError(f"dataset {uri}: no such file or directory")
    elif path.suffix == ".jsonl":
        rows = _jsonl(path.read_text(errors="replace"), uri, labelled)
    elif path.suffix == ".txt" and not labelled:
        raw = path.read_text(errors="replace")
        rows = [(p.strip(), None) for p in raw.split("\n\n") if p.strip()]
    else:
        need = (
            "a .jsonl with text and label fields"
            if labelled
            else "a .txt of paragraphs or a .jsonl with a text field"
        )
        raise WorkerError(f"dataset {uri}: {need} (or a datasets save_to_disk directory)")
    items = [text for text, _ in rows]
    labels = (
        [_label(label, label2id, uri, n) for n, (_, label) in enumerate(rows, 1)]
        if label2id is not None
        else None
    )
    if len(items) < 20:
        raise WorkerError(f"dataset {uri}: {len(items)} texts; at least 20 are needed to split")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    cut = max(1, int(len(items) * HELD_OUT))
    train, held_out = order[cut:], order[:cut]
    return Texts(
        train=[items[i] for i in train],
        held_out=[items[i] for i in held_out],
        train_labels=[labels[i] for i in train] if labels is not None else None,
        held_out_labels=[labels[i] for i in held_out] if labels is not None else None,
    )


def _saved_dataset(path: Path, uri: str, labelled: bool) -> list[tuple[str, Any]]:
    """A Hugging Face ``datasets`` folder (``save_to_disk``): its ``train`` split if it has
    splits (the worker makes its own held-out split), its ``text`` and ``label`` columns."""
    from datasets import DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise WorkerError(
            f"dataset {uri}: not a datasets save_to_disk directory ({first_line(e)})"
        ) from None
    if isinstance(data, DatasetDict):
        if "train" not in data:
            raise WorkerError(f"dataset {uri}: splits {', '.join(data)}, none named train")
        data = data["train"]
    need = ["text", "label"] if labelled else ["text"]
    missing = [c for c in need if c not in data.column_names]
    if missing:
        raise WorkerError(
            f"dataset {uri}: no {' or '.join(missing)} column (it has "
            f"{', '.join(data.column_names)})"
        )
    texts = [str(t) for t in data["text"]]
    return list(zip(texts, data["label"] if labelled else [None] * len(texts), strict=True))


def _jsonl(raw: str, uri: str, labelled: bool) -> list[tuple[str, Any]]:
    fields = "text and label fields" if labelled else "a text field"
    rows = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((str(row["text"]), row["label"] if labelled else None))
        except (ValueError, KeyError, TypeError):
            raise WorkerError(f"dataset {uri}: line {n} is not JSON with {fields}") from None
    return rows


def _label(label: Any, label2id: dict[str, int], uri: str, n: int) -> int:
    """A class id the model has, from an id or one of its label names."""
    if isinstance(label, int) and not isinstance(label, bool) and label in label2id.values():
        return label
    if isinstance(label, str) and label in label2id:
        return label2id[label]
    raise WorkerError(
        f"dataset {uri}: text {n}'s label {label!r} is not one of the model's classes "
        f"({', '.join(sorted(label2id))} or their ids)"
    )


def perplexity(model: Any, tokenizer: Any, items: list[str], max_len: int) -> float:
    """exp of the mean next-token loss over every held-out token (token-weighted)."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for text in items:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_len)
            ids = ids.to(model.device)  # the GPU when the worker has one
            n = ids["input_ids"].shape[1] - 1
            if n < 1:
                continue
            out = model(**ids, labels=ids["input_ids"])
            total += float(out.loss) * n
            count += n
    if not count:
        raise WorkerError("dataset: the held-out texts have no tokens to score")
    return math.exp(total / count)


def accuracy(
    model: Any, tokenizer: Any, items: list[str], labels: list[int], max_len: int
) -> float:
    """The share of held-out texts whose highest logit is their label."""
    import torch

    right = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(items), 32):
            batch = tokenizer(
                items[start : start + 32],
                return_tensors="pt",
                truncation=True,
                max_length=max_len,
                padding=True,
            )
            guess = model(**batch.to(model.device)).logits.argmax(-1).tolist()
            right += sum(g == y for g, y in zip(guess, labels[start : start + 32], strict=True))
    return right / len(items)


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
