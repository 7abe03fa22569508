"""Write (or check) crds/*.yaml and the chart's copy from the pydantic models."""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from gpucost.api.crds import all_crds

HEADER = (
    "# Generated from operator/gpucost/api by `gpucost crds`. Do not edit: change the models.\n"
)
TARGETS = (Path("crds"), Path("charts/gpu-cost-operator/crds"))


def rendered() -> dict[str, str]:
    """File name → YAML text for every CRD."""
    return {
        f"{c['spec']['group']}_{c['spec']['names']['plural']}.yaml": HEADER
        + yaml.safe_dump(c, sort_keys=False, width=100)
        for c in all_crds()
    }


def drift(root: Path) -> list[str]:
    """Unified diffs between committed and generated YAML (empty when in sync)."""
    diffs = []
    for folder in TARGETS:
        want = rendered()
        have = (
            {p.name: p.read_text() for p in (root / folder).glob("*.yaml")}
            if (root / folder).exists()
            else {}
        )
        for name in sorted(set(want) | set(have)):
            if want.get(name) != have.get(name):
                diffs.append(
                    "".join(
                        difflib.unified_diff(
                            (have.get(name) or "").splitlines(keepends=True),
                            (want.get(name) or "").splitlines(keepends=True),
                            f"committed/{folder}/{name}",
                            f"generated/{folder}/{name}",
                        )
                    )
                    or f"{folder}/{name}: missing\n"
                )
    return diffs


def write(root: Path) -> list[Path]:
    written = []
    for folder in TARGETS:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for stale in (root / folder).glob("*.yaml"):
            if stale.name not in rendered():
                stale.unlink()
        for name, text in rendered().items():
            path = root / folder / name
            path.write_text(text)
            written.append(path)
    return written
