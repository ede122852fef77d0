"""The import layering: dsp imports neither agent nor drivers, and drivers
imports neither agent nor dsp. Checked on the source text with ast, so a
lazy import inside a function is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "dsp": {"agent", "drivers"},
    "drivers": {"agent", "dsp"},
}


def imported_top_level_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_layering(package: str) -> None:
    sources = sorted((ROOT / package).rglob("*.py"))
    assert sources, f"no sources found under {package}/"
    violations = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sources
        for name in sorted(imported_top_level_packages(path) & FORBIDDEN[package])
    ]
    assert violations == []


def test_checker_detects_forbidden_import(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from agent import settings\n")
    assert "agent" in imported_top_level_packages(source)
