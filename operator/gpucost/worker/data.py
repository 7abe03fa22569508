"""What the worker reads and writes: datasets, models, sizes, and the evaluation every method
reports before and after. Only local paths (or file://): object stores are mounted into the pod."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class WorkerError(Exception):
    """Bad input: the worker exits non-zero with this one line, which becomes the job's message."""


def local(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" in uri:
        raise WorkerError(
            f"{uri}: only local paths and file:// are read here (mount object storage into the pod)"
        )
    return Path(uri)


@dataclass(frozen=True)
class Dataset:
    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor


def load_dataset(uri: str) -> Dataset:
    """``sklearn:digits`` (or iris, wine, breast_cancer): a dataset scikit-learn ships, split 80/20
    with a fixed seed; or a torch file holding ``x`` and ``y`` (split the same way) or
    ``train_x``/``train_y``/``eval_x``/``eval_y``."""
    if uri.startswith("sklearn:"):
        from sklearn import datasets

        loader = getattr(datasets, f"load_{uri[len('sklearn:') :]}", None)
        if loader is None:
            raise WorkerError(f"{uri}: scikit-learn ships no such dataset (try sklearn:digits)")
        bunch = loader()
        return _split(
            torch.tensor(bunch.data, dtype=torch.float32),
            torch.tensor(bunch.target, dtype=torch.long),
        )
    path = local(uri)
    if not path.exists():
        raise WorkerError(f"dataset {uri}: no such file")
    try:
        raw = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same bad input
        raise WorkerError(
            f"dataset {uri}: not a torch file of tensors ({type(e).__name__})"
        ) from None
    if isinstance(raw, dict) and {"train_x", "train_y", "eval_x", "eval_y"} <= set(raw):
        return Dataset(
            raw["train_x"].float(),
            raw["train_y"].long(),
            raw["eval_x"].float(),
            raw["eval_y"].long(),
        )
    if isinstance(raw, dict) and {"x", "y"} <= set(raw):
        return _split(raw["x"].float(), raw["y"].long())
    raise WorkerError(
        f"dataset {uri}: expected tensors x and y (or train_x, train_y, eval_x, eval_y)"
    )


def _split(x: torch.Tensor, y: torch.Tensor) -> Dataset:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(len(x) * 0.8)
    train, held = order[:cut], order[cut:]
    mean, std = (
        x[train].mean(0),
        x[train].std(0).clamp_min(1e-6),
    )  # standardised on the training part only
    x = (x - mean) / std
    return Dataset(x[train], y[train], x[held], y[held])


def mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def load_model(uri: str) -> nn.Sequential:
    """A TorchScript or state-dict model made of Linear layers (an MLP), as an eager module the
    methods can quantize, prune or teach; anything else is refused with one line."""
    path = local(uri)
    if not path.exists():
        raise WorkerError(f"model {uri}: no such file")
    try:
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise WorkerError(
                f"model {uri}: neither TorchScript nor a state dict ({type(e).__name__})"
            ) from None
    if not isinstance(state, dict):
        raise WorkerError(f"model {uri}: neither TorchScript nor a state dict")
    weights = [v for k, v in state.items() if k.endswith("weight")]
    if not weights or any(w.dim() != 2 for w in weights) or len(state) != 2 * len(weights):
        raise WorkerError(
            f"model {uri}: incompatible: this worker compresses models made of Linear layers (an "
            "MLP)"
        )
    model = mlp([weights[0].shape[1]] + [w.shape[0] for w in weights])
    model.load_state_dict(dict(zip(model.state_dict(), state.values())))
    return model


def scripted_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    """The model as TorchScript, the form the serving side loads: what its size is measured on."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(model.eval(), example, check_trace=False), buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class Quality:
    accuracy: float
    loss: float
    latency_ms: float
    """Median wall time of one batch of 64 on this machine."""


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset) -> Quality:
    model.eval()
    x = data.eval_x
    logits = model(x).float()
    accuracy = (logits.argmax(1) == data.eval_y).float().mean().item() * 100
    loss = nn.functional.cross_entropy(logits, data.eval_y).item()
    batch = x[:64]
    times = []
    for _ in range(20):
        started = time.perf_counter()
        model(batch)
        times.append((time.perf_counter() - started) * 1000)
    return Quality(round(accuracy, 2), round(loss, 4), round(sorted(times)[len(times) // 2], 4))
