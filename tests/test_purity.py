"""The pure layer stays pure: model/ and pdes/ never import the orchestration or tracking stack."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"prefect", "mlflow", "great_expectations", "evidently"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["model", "pdes"])
def test_pure_packages_import_no_orchestration(package: str):
    files = sorted((ROOT / package).glob("*.py"))
    assert files, f"no modules found in {package}/"
    for f in files:
        bad = imported_modules(f) & FORBIDDEN
        assert not bad, f"{f.name} imports {bad}"


def test_pdes_does_not_need_torch():
    for f in sorted((ROOT / "pdes").glob("*.py")):
        assert "torch" not in imported_modules(f), f.name


def test_flows_only_compose_tasks():
    """Flows import tasks and configuration, never the pure packages' internals directly."""
    for f in sorted((ROOT / "flows").glob("*.py")):
        assert not imported_modules(f) & {"model", "pdes", "mlflow", "great_expectations",
                                          "evidently"}, f.name
