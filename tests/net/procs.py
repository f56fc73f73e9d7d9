"""Helpers for process tests: free ports, `shoal` subprocesses, a small network config."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG = """rounds = 8
seed = 3
backend = "inprocess"
[data]
dataset = "digits"
num_clients = 4
[model]
name = "mlp"
hidden = [16]
[strategy]
clients_per_round = 3
[trainer]
lr = 0.3
local_epochs = 3
batch_size = 8
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shoal(
    *args: str, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """``python -m shoal.cli ARGS`` with its output in ``log``."""
    # one thread, as this test process uses: float sums then match the simulation bit for bit
    full = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=full,
        cwd=cwd,
    )


def records(metrics: Path) -> list[dict[str, Any]]:
    if not metrics.exists():
        return []
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
