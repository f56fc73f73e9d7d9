"""What a run produced: per-round records (the lines of metrics.jsonl) and the final model."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from shoal.errors import CheckpointError
from shoal.params import ParamSpec, model_hash, to_module

Record = dict[str, Any]


@dataclass
class History:
    """Per-round metrics and the final weights of a run."""

    records: list[Record]
    params: np.ndarray
    spec: ParamSpec
    out_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    stopped: str | None = None  # why the run ended before its last round (a spent privacy budget)

    def series(self, key: str) -> list[tuple[int, float]]:
        """(round, value) for every round that recorded ``key``."""
        return [(r["round"], r[key]) for r in self.records if r.get(key) is not None]

    @property
    def final_accuracy(self) -> float | None:
        acc = self.series("test_accuracy") or self.series("fed_eval_accuracy")
        return acc[-1][1] if acc else None

    @property
    def bytes_up(self) -> int:
        return sum(int(r.get("bytes_up", 0)) for r in self.records)

    @property
    def bytes_down(self) -> int:
        return sum(int(r.get("bytes_down", 0)) for r in self.records)

    @property
    def model_hash(self) -> str:
        return model_hash(self.params)

    def rounds_to(self, target: float, key: str = "test_accuracy") -> int | None:
        """The first round whose ``key`` reached ``target``, or None."""
        return next((r for r, v in self.series(key) if v >= target), None)

    def load_into(self, module: nn.Module) -> nn.Module:
        """Copy the final weights into a freshly built model and return it."""
        to_module(self.params, self.spec, module)
        return module


class MetricsLog:
    """Appends one JSON line per round to ``metrics.jsonl``, flushed to disk each round."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[Record]:
        if not self.path.exists():
            return []
        records = []
        for n, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                # A kill mid-write can leave one torn last line; anything else is corruption.
                if n == len(self.path.read_text().splitlines()):
                    break
                raise CheckpointError(f"{self.path}:{n} is not valid JSON") from None
        return records

    def truncate(self, last_round: int) -> list[Record]:
        """Keep rounds <= last_round (the checkpoint's); drop what a crash left after it."""
        kept = [r for r in self.read() if r["round"] <= last_round]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(self.path)
        return kept

    def append(self, record: Record) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def load_history(run_dir: str | Path) -> list[Record]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no metrics.jsonl; is it a shoal run folder?")
    return MetricsLog(path).read()
