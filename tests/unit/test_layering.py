"""The pure layers stay pure: api and core import no I/O library (kopf's rule, checked like
kopf)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "gpucost"
FORBIDDEN = {
    "kopf",
    "kubernetes",
    "pynvml",
    "prometheus_api_client",
    "prometheus_client",
    "requests",
    "aiohttp",
    "subprocess",
    "socket",
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(
    "path",
    sorted((PACKAGE / "core").glob("*.py"))
    + sorted((PACKAGE / "api").glob("*.py"))
    + [PACKAGE / "manifests.py"],
    ids=lambda p: p.name,
)
def test_pure_modules_import_no_io(path):
    assert not imported_roots(path) & FORBIDDEN


def test_operator_folder_is_not_an_importable_package():
    assert not (PACKAGE.parent / "__init__.py").exists()
