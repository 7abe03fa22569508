"""What each serving engine is told about its GPU slice, and which user flags contradict it.

vLLM sizes its memory as a fraction of the *whole* GPU (``--gpu-memory-utilization``), so a
replica on a 20,000 MiB slice of an 80 GB GPU left at the default takes ~72 GB and is killed by the
slice's enforcement. The operator therefore passes the fraction the slice is of the GPU it was
placed on, or (when the weights' size is known) the KV-cache budget that is left in the slice
(``--kv-cache-memory-bytes``, which does not depend on the GPU's size or its co-tenants).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpucost.api.serving import Engine

OVERHEAD_MIB = 2048
"""GPU memory a vLLM replica needs beside weights and KV cache: peak activations, the CUDA
context and CUDA graphs (0.85-2.5 GiB in vLLM's start-up logs, ../shared/data/vllm-perf §3)."""
MIB = 1 << 20


@dataclass(frozen=True)
class Flags:
    """The flag names one engine takes for the operator's settings; None where it has none."""

    memory_fraction: str | None
    kv_bytes: str | None
    parallel: tuple[str, ...]
    port: str | None
    served_name: str | None = None


FLAGS = {
    Engine.VLLM: Flags(
        "--gpu-memory-utilization",
        "--kv-cache-memory-bytes",
        ("--tensor-parallel-size", "-tp"),
        "--port",
        "--served-model-name",
    ),
    Engine.SGLANG: Flags(
        "--mem-fraction-static", None, ("--tp-size", "--tp"), "--port", "--served-model-name"
    ),
    Engine.TGI: Flags("--cuda-memory-fraction", None, ("--num-shard",), "--port"),
    Engine.CUSTOM: Flags(None, None, (), None),
}


@dataclass(frozen=True)
class Slice:
    """What a replica got: ``gpus`` GPUs of ``gpu_mib`` each, ``mib_per_gpu`` of each one."""

    gpus: int
    mib_per_gpu: int
    gpu_mib: int
    whole: bool

    @property
    def fraction(self) -> float:
        """Rounded down, so the engine never asks for a MiB more than its slice."""
        return math.floor(1000 * self.mib_per_gpu / self.gpu_mib) / 1000


def _norm(flag: str) -> str:
    return flag.replace("_", "-") if flag.startswith("--") else flag


def flag_value(args: Sequence[str], names: Iterable[str]) -> str | None:
    """The value of the last of ``names`` in ``args`` (``--f v`` or ``--f=v``); None if unset."""
    wanted = {_norm(n) for n in names}
    found = None
    for i, arg in enumerate(args):
        key, eq, value = arg.partition("=")
        if _norm(key) not in wanted:
            continue
        if eq:
            found = value
        elif i + 1 < len(args):
            found = args[i + 1]
        else:
            found = ""
    return found


def kv_budget_mib(mib_per_gpu: int, model_mib: int) -> int:
    return mib_per_gpu - model_mib - OVERHEAD_MIB


def engine_args(
    engine: str,
    args: Sequence[str],
    got: Slice,
    port: int,
    model_mib: int | None,
    served_name: str | None = None,
) -> list[str]:
    """Flags appended to the user's args; a flag the user set (and ``contradiction`` let
    through) is left as the user wrote it."""
    flags = FLAGS[Engine(engine)]
    out: list[str] = []

    def add(flag: str | None, value: str, *aliases: str) -> None:
        if flag and flag_value(args, (flag, *aliases)) is None:
            out.extend([flag, value])

    if flags.port:
        add(flags.port, str(port))
    if served_name:  # the name the gateway routes by is the name the engine answers to
        add(flags.served_name, served_name)
    if got.gpus > 1 and flags.parallel:
        add(flags.parallel[0], str(got.gpus), *flags.parallel[1:])
    if got.whole:
        return out
    add(flags.memory_fraction, f"{got.fraction:g}")
    if flags.kv_bytes and model_mib is not None:
        add(flags.kv_bytes, str(kv_budget_mib(got.mib_per_gpu, model_mib) * MIB))
    return out


def contradiction(
    engine: str,
    args: Sequence[str],
    *,
    port: int,
    slice_mib: int | None,
    gpus: int,
    gpu_sizes: Iterable[int],
    model_mib: int | None,
) -> str | None:
    """Why the user's args (or modelMemoryMiB) cannot run in the ask on these GPU sizes, naming
    the flag; None if they can. ``slice_mib`` is None for whole GPUs."""
    flags = FLAGS[Engine(engine)]
    if flags.port and (given := flag_value(args, (flags.port,))) is not None:
        if given != str(port):
            return f"args: {flags.port} {given} is not the pool's port {port}"
    want_parallel = 1 if slice_mib is not None else gpus
    if flags.parallel and (given := flag_value(args, flags.parallel)) is not None:
        if given != str(want_parallel):
            what = "a slice of one GPU" if slice_mib is not None else f"{gpus} whole GPUs"
            return (
                f"args: {flags.parallel[0]} {given} does not match the ask ({what}: "
                f"{want_parallel})"
            )
    if slice_mib is None:
        return None
    if model_mib is not None and flags.kv_bytes and kv_budget_mib(slice_mib, model_mib) <= 0:
        return (
            f"modelMemoryMiB {model_mib} + {OVERHEAD_MIB} MiB engine overhead leave no KV cache "
            f"in a {slice_mib} MiB slice"
        )
    if flags.memory_fraction and (given := flag_value(args, (flags.memory_fraction,))):
        try:
            fraction = float(given)
        except ValueError:
            return f"args: {flags.memory_fraction} {given} is not a number"
        for size in sorted(set(gpu_sizes), reverse=True):
            if fraction * size > slice_mib:
                return (
                    f"args: {flags.memory_fraction} {given} asks {fraction:g} x {size} MiB = "
                    f"{fraction * size:.0f} MiB of a {slice_mib} MiB slice; remove it (the "
                    "operator sets it from the slice) or ask for a larger slice"
                )
    if flags.kv_bytes and (given := flag_value(args, (flags.kv_bytes,))):
        try:
            kv_mib = int(given) / MIB
        except ValueError:
            return f"args: {flags.kv_bytes} {given} is not a number of bytes"
        need = kv_mib + (model_mib or 0) + (OVERHEAD_MIB if model_mib is not None else 0)
        if need > slice_mib:
            return (
                f"args: {flags.kv_bytes} {given} ({kv_mib:.0f} MiB) with the weights and overhead "
                f"needs {need:.0f} MiB of a {slice_mib} MiB slice"
            )
    return None
