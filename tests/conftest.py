"""Session-wide honesty rules: a skipped test fails the run, and so does an empty one."""

from __future__ import annotations

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        reporter.write_line(f"{skipped} test(s) skipped: a skipped test is not a pass", red=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def llama():
    """The tiny trained Llama (devcluster.tinymodels, cached outside the repo; about 5 minutes
    the first time on one core), with stdlib-docs.txt, the text it learned, beside it."""
    import torch

    from gpucost.devcluster import tinymodels

    torch.set_num_threads(1)  # two threads on this shared 2-core machine ran 2-10x slower
    return tinymodels.causal_lm(progress=True)


@pytest.fixture(scope="session")
def bert(llama):
    """The tiny trained BERT classifier (eight stdlib modules' docstrings; about 2 minutes the
    first time), with stdlib-topics.jsonl, its labelled text, beside it."""
    from gpucost.devcluster import tinymodels

    return tinymodels.classifier(progress=True)
