"""What the README and bench/ promise about set-up holds on a fresh clone."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = sorted((ROOT / "bench").glob("*.py"))


@pytest.mark.parametrize("script", BENCH, ids=[p.name for p in BENCH])
def test_every_benchmark_finds_its_imports_after_the_dev_set_up(script):
    local = {p.stem for p in BENCH}
    missing = []
    for node in ast.walk(ast.parse(script.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if (
                top not in local
                and top not in sys.stdlib_module_names
                and importlib.util.find_spec(top) is None
            ):
                missing.append(top)
    assert not missing, f"{script.name} imports {missing}, which ./scripts/setup dev does not install"


def test_the_readme_installs_extras_through_scripts_setup():
    readme = (ROOT / "README.md").read_text()
    assert 'pip install "shoal[' not in readme  # shoal is not on any index: scripts/setup EXTRA
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in re.findall(r"scripts/setup (\w+)", readme):
        assert extra in extras, f"the README runs scripts/setup {extra}, which pyproject.toml lacks"
