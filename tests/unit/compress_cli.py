"""`gpucost compress` as the tests run it: as the Job's pod does (a subprocess with its
termination log), or in this process, checked against the results.json it wrote; and a tiny
Llama's checkpoint reloaded with transformers, scoring what the worker reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_compress(
    tmp_path: Path,
    model: str,
    dataset: str,
    method: dict,
    timeout: float,
    output: str | None = None,
    **env: str,
) -> tuple[subprocess.CompletedProcess, str]:
    """The finished process and what it wrote to its termination log."""
    log = tmp_path / "termination-log"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpucost",
            "compress",
            "--model",
            model,
            "--dataset",
            dataset,
            "--output",
            output or str(tmp_path / "out"),
            "--method",
            json.dumps(method),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "GPUCOST_TERMINATION_LOG": str(log), **env},
    )
    return out, log.read_text()


def compressed(
    model: Path,
    dataset: Path,
    out: Path,
    method: dict,
    serving: dict,
    checkpoints: Path | None = None,
) -> dict:
    """The worker's results, run in this process (checkpoints every 25 steps when given)."""
    from gpucost.worker.main import compress

    results = compress(
        f"file://{model}",
        str(dataset),
        str(out),
        method,
        str(checkpoints) if checkpoints else None,
        25,
        0,
        serving,
    )
    assert json.loads((out / "results.json").read_text()) == results
    return results


def reloaded_llama(llama: Path, out: Path, results: dict) -> dict:
    """The checkpoint's config.json, once transformers has loaded the checkpoint and it scored
    the perplexity the worker reported (to 0.1 %): what was judged is what was written."""
    import pytest
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gpucost.worker import hf

    model = AutoModelForCausalLM.from_pretrained(out)
    held_out = hf.texts(llama.parent / "stdlib-docs.txt", "docs", 0).held_out
    again = hf.perplexity(model, AutoTokenizer.from_pretrained(out), held_out, 128)
    assert again == pytest.approx(results["after"]["perplexity"], rel=1e-3)
    return json.loads((out / "config.json").read_text())
