"""``gpucost compress``: the CompressionJob worker (the default image's entrypoint, `.[compress]`).

``quantize`` takes a Hugging Face causal LM and writes a compressed-tensors checkpoint vLLM serves;
``prune`` and ``distill`` still take the small TorchScript MLPs of the first version. Each judges
the model before and after, writes results.json beside the output, and one line to the
termination log that the controller shows in the job's status. Bad input exits 1 with one clear
line (also in the termination log).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

TERMINATION_LOG = Path(os.environ.get("GPUCOST_TERMINATION_LOG", "/dev/termination-log"))


def _report(line: str, stream: Any, message: str | None = None) -> None:
    """``line`` to the stream; ``message`` (default the line) to the termination log."""
    print(line, file=stream, flush=True)
    try:
        TERMINATION_LOG.write_text((message or line)[:4000])
    except OSError:
        pass  # not in a pod: the stream is enough


def run(
    model_uri: str,
    dataset_uri: str,
    output_uri: str,
    method: dict[str, Any],
    checkpoint_dir: str | None,
    checkpoint_every: int,
    seed: int,
    serving: dict[str, Any] | None = None,
) -> int:
    from gpucost.worker.data import WorkerError

    try:
        results = compress(
            model_uri,
            dataset_uri,
            output_uri,
            method,
            checkpoint_dir,
            checkpoint_every,
            seed,
            serving or {},
        )
    except WorkerError as e:
        _report(str(e), sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - every failure is one line for the job's status
        _report(f"{type(e).__name__}: {e}", sys.stderr)
        return 1
    if "scheme" in results:  # a quantized LLM: the status carries its figures too
        from gpucost.worker.llm import short

        message = {"summary": results["summary"], "results": short(results).wire()}
        _report(results["summary"], sys.stdout, json.dumps(message, separators=(",", ":")))
    else:
        _report(results["summary"], sys.stdout)
    return 0


def compress(
    model_uri: str,
    dataset_uri: str,
    output_uri: str,
    method: dict[str, Any],
    checkpoint_dir: str | None,
    checkpoint_every: int,
    seed: int,
    serving: dict[str, Any],
) -> dict[str, Any]:
    import warnings

    import torch

    # TorchScript (the MLP path's output) is deprecated upstream; its warnings are not the job's.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch")

    from pydantic import ValidationError

    from gpucost.api.compressionjob import Method, Serving
    from gpucost.worker import methods
    from gpucost.worker.data import (
        WorkerError,
        evaluate,
        load_dataset,
        load_model,
        local,
        scripted_bytes,
    )

    def parsed(model: Any, raw: dict[str, Any], name: str) -> Any:
        try:
            return model.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise WorkerError(f"{name}{'.' + where if where else ''}: {first['msg']}") from None

    spec, shape = parsed(Method, method, "method"), parsed(Serving, serving, "serving")
    if spec.quantize:
        from gpucost.worker.llm import quantize_model

        results = quantize_model(model_uri, dataset_uri, output_uri, spec.quantize, shape, seed)
        (local(output_uri) / "results.json").write_text(json.dumps(results, indent=1))
        return results
    torch.manual_seed(seed)
    data = load_dataset(dataset_uri)
    model = load_model(model_uri)
    if model[0].in_features != data.train_x.shape[1]:
        raise WorkerError(
            f"model {model_uri}: takes {model[0].in_features} features, the dataset has "
            f"{data.train_x.shape[1]}"
        )
    ckpt = methods.Checkpoints(local(checkpoint_dir) if checkpoint_dir else None, checkpoint_every)
    example = data.eval_x[:1]
    before, before_bytes = evaluate(model, data), scripted_bytes(model, example)
    if spec.prune:
        name = "prune"
        compressed, report = methods.prune(
            model,
            spec.prune.amount,
            spec.prune.structured,
            spec.prune.fine_tune_epochs,
            data,
            ckpt,
            seed,
        )
    else:
        assert spec.distill is not None
        name = "distill"
        student = load_model(spec.distill.student_uri) if spec.distill.student_uri else None
        compressed, report = methods.distill(
            model,
            student,
            spec.distill.temperature,
            spec.distill.alpha,
            spec.distill.epochs,
            data,
            ckpt,
            seed,
        )
    after, after_bytes = evaluate(compressed, data), scripted_bytes(compressed, example)
    compact = _sparse_bytes(compressed) if spec.prune and not spec.prune.structured else None
    out = local(output_uri)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.pt").write_bytes(after_bytes)
    results: dict[str, Any] = {
        "method": name,
        **report,
        "before": {**before.__dict__, "bytes": len(before_bytes)},
        "after": {
            **after.__dict__,
            "bytes": len(after_bytes),
            **({"compactBytes": compact} if compact else {}),
        },
        "sizeRatio": round((compact or len(after_bytes)) / len(before_bytes), 4),
        "accuracyChange": round(after.accuracy - before.accuracy, 2),
        "resumedFromStep": ckpt.resumed_from,
        "attempt": int(os.environ.get("GPUCOST_ATTEMPT", "1")),
    }
    results["summary"] = (
        f"{name}: {len(before_bytes) / 1e6:.2f} MB -> {(compact or len(after_bytes)) / 1e6:.2f} MB "
        f"({results['sizeRatio'] * 100:.0f} %), accuracy {before.accuracy:.1f} -> "
        f"{after.accuracy:.1f}"
    )
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def _sparse_bytes(model: Any) -> int:
    """Unstructured pruning saves space only when stored sparse: each weight matrix as the int32
    flat positions and fp32 values of its non-zeros (8 bytes a weight kept, against 4 for every
    weight dense), the rest as is."""
    import io

    import torch

    def compact(t: torch.Tensor) -> Any:
        if t.dim() != 2:
            return t
        flat = t.flatten()
        kept = flat.nonzero().flatten()
        return {"shape": list(t.shape), "index": kept.to(torch.int32), "value": flat[kept]}

    buffer = io.BytesIO()
    torch.save({k: compact(v) for k, v in model.state_dict().items()}, buffer)
    return len(buffer.getvalue())
