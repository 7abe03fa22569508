"""``gpucost compress``: the CompressionJob worker (the default image's entrypoint, `.[compress]`).

Every method takes a Hugging Face causal LM or BERT classifier (from a path, ``s3://`` or
``hf://``) and writes a checkpoint vLLM serves as is: ``quantize`` in compressed-tensors format,
``prune`` and ``distill`` as a smaller dense model (to a path or ``s3://``). Each judges the
model before and after, writes results.json beside the output, and its figures to the termination
log, which the controller copies into the job's status. Bad input exits 1 with one clear line
(also in the termination log).
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
        _report(" ".join(f"{type(e).__name__}: {e}".split()), sys.stderr)
        return 1
    from gpucost.worker.llm import short

    message = {"summary": results["summary"], "results": short(results).wire()}
    _report(results["summary"], sys.stdout, json.dumps(message, separators=(",", ":")))
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
    from pydantic import ValidationError

    from gpucost.api.compressionjob import Method, Serving
    from gpucost.worker import storage
    from gpucost.worker.data import WorkerError, local

    def parsed(model: Any, raw: dict[str, Any], name: str) -> Any:
        try:
            return model.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise WorkerError(f"{name}{'.' + where if where else ''}: {first['msg']}") from None

    spec, shape = parsed(Method, method, "method"), parsed(Serving, serving, "serving")
    out = storage.output(output_uri)
    from gpucost.worker.llm import compress_model

    checkpoints = local(checkpoint_dir) if checkpoint_dir else None
    results = compress_model(
        model_uri, dataset_uri, out, spec, shape, seed, checkpoints, checkpoint_every
    )
    (out / "results.json").write_text(json.dumps(results, indent=1))
    storage.publish(out, output_uri)  # last: a bucket never holds a half-written model
    return results
