"""Errors print before torch loads, and lazy packages still export what they list."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAZY = ["shoal", "shoal.client", "shoal.config", "shoal.fleet", "shoal.runtime", "shoal.split"]
HEAVY = ("torch", "dp_accounting", "scipy", "matplotlib")


@pytest.mark.parametrize("package", LAZY)
def test_a_lazy_package_exports_what_its_type_checking_block_imports(package):
    module = importlib.import_module(package)
    source = Path(module.__file__).read_text()
    checked = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                checked |= {a.asname or a.name for a in imp.names}  # type: ignore[attr-defined]
    submodules = {n for n in checked - set(module._WHERE) if importlib.util.find_spec(f"{package}.{n}")}
    assert checked == set(module._WHERE) | submodules  # sub-packages load by name, untabled
    for name in [*module._WHERE, *getattr(module, "__all__", [])]:
        assert getattr(module, name) is not None, name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--roundz", "3"], "unrecognized arguments"),
        (["run", "--config", "missing.toml"], "does not exist"),
        (["run", "--rounds", "zero"], "rounds: expected an integer"),
        (["run", "--strategy-name", "fedsgd"], "is not allowed"),
        (["client", "--server", "x:1", "--client-id", "a b", "--insecure", "--data", "d"], "not a valid"),
        (["server", "--config", "missing.toml", "--insecure"], "does not exist"),
    ],
)
def test_command_line_errors_print_before_torch_loads(argv, message, tmp_path):
    probe = (
        "import sys\nfrom shoal.cli import main\n"
        f"try:\n    code = main({argv!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
        f"print('loaded:', sorted(m for m in {HEAVY!r} if m in sys.modules))\nsys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "loaded: []" in done.stdout


def test_the_built_in_client_algorithms_register_whatever_was_imported_first():
    probe = "from shoal.client.algorithm import registered\nprint(sorted(a.name for a in registered()))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    for name in ("dp_sgd", "feddyn", "fednova", "fedprox", "scaffold", "fedper", "fedrep", "fedbn", "ditto",
                 "apfl", "finetune", "ewc", "replay", "attack"):  # fmt: skip
        assert name in done.stdout, done.stdout
