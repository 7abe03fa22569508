"""Prune and distill an MLP, with training that checkpoints and resumes.

Training is deterministic given the seed: batch order comes from a generator seeded per epoch, and
a checkpoint holds the step, weights, optimizer and RNG state, so a worker killed on a reclaimed
spot node and restarted elsewhere continues from the last checkpoint to the same result.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from gpucost.worker.data import Dataset, WorkerError, mlp

BATCH = 64
Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Checkpoints:
    directory: Path | None
    every: int = 50
    """Steps between checkpoints."""
    resumed_from: int = 0

    @property
    def path(self) -> Path | None:
        return self.directory / "checkpoint.pt" if self.directory else None


def train(
    model: nn.Module,
    data: Dataset,
    epochs: int,
    loss_fn: Loss,
    ckpt: Checkpoints,
    seed: int,
    lr: float = 1e-3,
) -> int:
    """Adam over ``epochs`` of shuffled batches; returns the number of steps taken in all."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    per_epoch = (len(data.train_x) + BATCH - 1) // BATCH
    total, step = epochs * per_epoch, 0
    if ckpt.path and ckpt.path.exists():
        state = torch.load(ckpt.path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = ckpt.resumed_from = int(state["step"])
    model.train()
    while step < total:
        epoch, offset = divmod(step, per_epoch)
        order = torch.randperm(
            len(data.train_x), generator=torch.Generator().manual_seed(seed + epoch)
        )
        for batch in range(offset, per_epoch):
            idx = order[batch * BATCH : (batch + 1) * BATCH]
            optimizer.zero_grad()
            loss_fn(model, data.train_x[idx], data.train_y[idx]).backward()
            optimizer.step()
            step += 1
            if ckpt.path and (step % ckpt.every == 0 or step == total):
                ckpt.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = ckpt.path.with_suffix(".tmp")
                torch.save(
                    {
                        "step": step,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                    },
                    tmp,
                )
                tmp.replace(ckpt.path)  # a kill mid-write leaves the previous checkpoint whole
    return total


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def prune(
    model: nn.Sequential,
    amount: float,
    structured: bool,
    fine_tune_epochs: int,
    data: Dataset,
    ckpt: Checkpoints,
    seed: int,
) -> tuple[nn.Module, dict[str, Any]]:
    """L1 pruning of each hidden Linear (the output layer keeps every class), fine-tuned with the
    masks in place, then made permanent. Structured pruning removes whole output channels (and the
    next layer's matching inputs), so the compact model is a smaller dense MLP."""
    pruned = copy.deepcopy(model)
    hidden = _linears(pruned)[:-1]
    if not hidden:
        raise WorkerError("prune: the model has no hidden layer to prune")
    for layer in hidden:
        if structured:
            torch_prune.ln_structured(layer, "weight", amount=amount, n=1, dim=0)
        else:
            torch_prune.l1_unstructured(layer, "weight", amount=amount)
    steps = (
        train(pruned, data, fine_tune_epochs, cross_entropy, ckpt, seed) if fine_tune_epochs else 0
    )
    for layer in hidden:
        torch_prune.remove(layer, "weight")
    weights = [layer.weight for layer in hidden]
    sparsity = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    report: dict[str, Any] = {
        "sparsity": round(sparsity, 4),
        "structured": structured,
        "steps": steps,
    }
    return (_drop_channels(pruned) if structured else pruned), report


def _drop_channels(model: nn.Sequential) -> nn.Sequential:
    """The structured-pruned MLP without its zeroed channels: same function, fewer weights."""
    linears = _linears(model)
    keep = [torch.arange(linears[0].in_features)]
    for layer in linears[:-1]:
        keep.append((layer.weight.abs().sum(1) != 0).nonzero().flatten())
    keep.append(torch.arange(linears[-1].out_features))
    compact = mlp([len(k) for k in keep])
    with torch.no_grad():
        for i, (old, new) in enumerate(zip(linears, _linears(compact))):
            new.weight.copy_(old.weight[keep[i + 1]][:, keep[i]])
            new.bias.copy_(old.bias[keep[i + 1]])
    return compact


def distill(
    teacher: nn.Sequential,
    student: nn.Sequential | None,
    temperature: float,
    alpha: float,
    epochs: int,
    data: Dataset,
    ckpt: Checkpoints,
    seed: int,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the student on alpha * KL(teacher's soft targets at T) * T^2 + (1 - alpha) *
    CE(labels).
    The default student halves every hidden width of the teacher."""
    teacher.eval()
    if student is None:
        widths = [_linears(teacher)[0].in_features] + [
            max(1, m.out_features // 2) for m in _linears(teacher)[:-1]
        ]
        torch.manual_seed(seed)
        student = mlp(widths + [_linears(teacher)[-1].out_features])

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft = nn.functional.softmax(teacher(x) / temperature, dim=1)
        logits = model(x)
        kl = nn.functional.kl_div(
            nn.functional.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean"
        )
        return alpha * kl * temperature**2 + (1 - alpha) * nn.functional.cross_entropy(logits, y)

    steps = train(student, data, epochs, loss, ckpt, seed)
    return student, {"temperature": temperature, "alpha": alpha, "epochs": epochs, "steps": steps}
