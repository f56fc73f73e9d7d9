"""`shoal new NAME`: a project that trains from its own folder and passes its own test."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shoal.cli import main
from shoal.errors import ConfigError
from shoal.scaffold import new_project, package_name


def test_a_new_project_trains_from_its_folder(tmp_path, monkeypatch, capsys):
    assert main(["new", "demo-app", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "demo-app"
    for rel in ("shoal.toml", "README.md", "demo_app/model.py", "demo_app/data.py", "demo_app/client.py",
                "tests/test_project.py", "data/train.csv"):  # fmt: skip
        assert (root / rel).is_file(), rel
    monkeypatch.chdir(root / "demo_app")  # a subfolder: the project is found upward
    out = tmp_path / "run"
    assert main(["run", "--quiet", "--rounds", "2", "--out", str(out)]) == 0
    assert "demo_app.model:Net" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["final_test_accuracy"] > 0.5  # 4 classes: chance is 0.25


@pytest.mark.slow
def test_the_new_projects_own_test_passes(tmp_path):
    root = new_project("proj", tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [("1st", "use a letter"), ("has space", "use a letter"), ("torch", "would shadow"), ("class", "shadow")],
)
def test_a_name_that_cannot_be_a_package_is_refused(name, message):
    with pytest.raises(ConfigError, match=message):
        package_name(name)


def test_an_existing_folder_is_never_overwritten(tmp_path):
    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        new_project("mine", tmp_path)
