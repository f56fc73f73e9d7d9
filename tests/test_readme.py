"""Every code block in the README runs, or, for shell, names commands and flags that exist.

Python blocks run in order in one namespace (later blocks use the ``model`` and ``data``
of earlier ones), in a scratch folder, with the round counts below cut so the suite stays
fast. TOML blocks load as configs. Shell lines that call ``shoal`` parse with the real
command-line parser, so a renamed flag fails here; scripts and benchmarks they name exist.
Unlabelled blocks are output and file trees, not code.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from shoal import config
from shoal.cli import parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = [(m.group(1), m.group(2), README[: m.start()].count("\n") + 1)
          for m in re.finditer(r"```(\w*)\n(.*?)```", README, re.S)]  # fmt: skip
SHORTER = {"rounds=30,": "rounds=1,", "rounds=500)": "rounds=2)"}  # (text in a block, what the test runs)
# The DP block samples 1% of 10,000 users: the population it is written for, made small.
TEN_THOUSAND = """
from shoal.data import ArrayDataset, ClientData, FederatedDataset
one = ClientData(ArrayDataset(torch.randn(2, 4, generator=gen), torch.tensor([0, 1])))
data = FederatedDataset("users", {f"u{i}": one for i in range(10_000)}, num_classes=2, input_shape=(4,))
"""


def _blocks(lang: str) -> list[tuple[str, int]]:
    return [(body, line) for kind, body, line in BLOCKS if kind == lang]


def test_the_python_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    assert len(_blocks("python")) >= 6
    for body, line in _blocks("python"):
        for text, shorter in SHORTER.items():
            body = body.replace(text, shorter)
        if "Sampling.poisson(0.01, 10_000)" in body:
            exec(TEN_THOUSAND, namespace)
        exec(compile(body, f"README.md:{line}", "exec"), namespace)


@pytest.mark.parametrize(("body", "line"), _blocks("toml"), ids=lambda v: str(v)[:20])
def test_the_toml_blocks_are_valid_configs(body, line):
    raw = tomllib.loads(re.sub(r"^# .*\n", "", body))
    config.from_dict(raw)


def _commands(body: str) -> list[list[str]]:
    """The commands of a shell block: continuations joined, comments dropped, loops opened."""
    text = re.sub(r"\\\n", " ", body)
    commands = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip().replace("$i", "0")
        line = re.sub(r"^for \w+ in [^;]*; do ", "", line)
        for part in re.split(r"\s*(?:&&|;|&(?!\S)|\|)\s*", line):
            words = shlex.split(part)
            while words and words[0] in ("do", "done", "wait", "cd", "then"):
                words = words[2:] if words[0] == "cd" else words[1:]
            if words:
                commands.append(words)
    return commands


SHELL = [(words, line) for body, line in _blocks("bash") for words in _commands(body)]


@pytest.mark.parametrize(("words", "line"), SHELL, ids=[f"{line}:{' '.join(w)[:40]}" for w, line in SHELL])
def test_each_shell_command_exists_with_its_flags(words, line):
    if words[0] == "shoal" and "--help" in words:
        with pytest.raises(SystemExit, match="0"):
            parser().parse_args(words[1:])
    elif words[0] == "shoal":
        parser().parse_args(words[1:])  # argparse exits with status 2 on an unknown flag
    elif words[0].startswith("./") or words[0] in ("python", ".venv/bin/python"):
        script = words[0] if words[0].startswith("./") else words[1]
        assert (ROOT / script).is_file(), f"README.md:{line} runs {script}, which does not exist"
