"""Best-fit placement of GPU asks onto GPUs.

Best fit on free memory keeps large holes open for large asks; later issues plug in FGD-style
policies behind the same ``place`` signature.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpucost.core.inventory import Ask, FreeMap, GPUNode


@dataclass(frozen=True)
class Placement:
    node: str
    gpu_indices: tuple[int, ...]
    gpu_uuids: tuple[str, ...]
    memory_mib: int
    """Total MiB reserved over its GPUs (a whole GPU reserves all of its memory)."""


@dataclass(frozen=True)
class NoFit:
    reason: str
    """``Unschedulable`` (no room now) or ``NoMatchingGPU`` (no node could ever hold it)."""
    message: str
    missing_mib: int
    """How much more free memory the best candidate GPU (or GPU set) would have needed."""


def eligible(ask: Ask, node: GPUNode) -> bool:
    return (
        node.schedulable
        and node.capacity_type in ask.capacity_types
        and (ask.pools is None or node.pool in ask.pools)
        and (not ask.gpu_models or all(g.model in ask.gpu_models for g in node.gpus))
    )


def fits_ever(ask: Ask, node: GPUNode) -> bool:
    """Could this node hold the ask if it were empty?"""
    if ask.gpus is not None:
        return len(node.gpus) >= ask.gpus
    return any(g.memory_mib >= (ask.memory_mib or 0) for g in node.gpus)


def _place_slice(ask: Ask, nodes: list[GPUNode], free: FreeMap) -> Placement | int:
    """Best fit over single GPUs; returns the shortfall in MiB when nothing fits."""
    need = ask.memory_mib or 0
    best: tuple[int, str, int] | None = None
    best_gpu = None
    largest = 0
    for node in nodes:
        for gpu in node.gpus:
            avail = free.free[(node.name, gpu.index)]
            if not node.shared and avail < gpu.memory_mib:
                continue  # whole-GPU pools never share a GPU
            largest = max(largest, avail)
            if avail < need:
                continue
            take = need if node.shared else gpu.memory_mib
            key = (avail - take, node.name, gpu.index)
            if best is None or key < best:
                best, best_gpu = key, (node, gpu, take)
    if best_gpu is None:
        return need - largest
    node, gpu, take = best_gpu
    free.take(node.name, gpu.index, take)
    return Placement(node.name, (gpu.index,), tuple(u for u in [gpu.uuid] if u), take)


def _place_whole(ask: Ask, nodes: list[GPUNode], free: FreeMap) -> Placement | int:
    """k fully free GPUs on one node; best fit = the node left with the fewest free GPUs."""
    k = ask.gpus or 0
    best = None
    most_free_mib = 0
    for node in nodes:
        empty = [g for g in node.gpus if free.free[(node.name, g.index)] == g.memory_mib]
        most_free_mib = max(most_free_mib, sum(g.memory_mib for g in empty))
        if len(empty) < k:
            continue
        key = (len(empty) - k, node.name)
        if best is None or key < best[0]:
            best = (key, node, empty[:k])
    if best is None:
        per_gpu = max((g.memory_mib for n in nodes for g in n.gpus), default=0)
        return max(k * per_gpu - most_free_mib, 0)
    _, node, gpus = best
    for g in gpus:
        free.take(node.name, g.index, g.memory_mib)
    return Placement(
        node.name,
        tuple(g.index for g in gpus),
        tuple(g.uuid for g in gpus if g.uuid),
        sum(g.memory_mib for g in gpus),
    )


def _describe(ask: Ask) -> str:
    if ask.gpus is not None:
        return f"{ask.gpus} whole GPU(s) on one node"
    return f"a {ask.memory_mib} MiB slice of one GPU"


def place(ask: Ask, nodes: list[GPUNode], free: FreeMap) -> Placement | NoFit:
    """Place one ask, updating ``free``; never over-commits a GPU."""
    candidates = [n for n in nodes if eligible(ask, n)]
    if not any(fits_ever(ask, n) for n in candidates):
        return NoFit(
            "NoMatchingGPU",
            f"no schedulable GPU node of capacity types {sorted(ask.capacity_types)}"
            + (f", GPU models {sorted(ask.gpu_models)}" if ask.gpu_models else "")
            + f" can hold {_describe(ask)}",
            ask.memory_mib or 0,
        )
    result = (_place_whole if ask.gpus is not None else _place_slice)(ask, candidates, free)
    if isinstance(result, Placement):
        return result
    return NoFit("Unschedulable", f"no GPU has room for {_describe(ask)}; short {result} MiB", result)


def place_all(ask: Ask, count: int, nodes: list[GPUNode], free: FreeMap) -> list[Placement | NoFit]:
    """Place ``count`` identical asks one after another, each seeing the ones before it."""
    return [place(ask, nodes, free) for _ in range(count)]
