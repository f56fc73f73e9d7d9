"""Per-round checkpoints: one safetensors file, written atomically (temp file + rename).

The file holds the global weights, every array of the stateful pieces (strategy,
transforms) under ``<owner>/<path>`` keys, and a JSON metadata entry with the round, the
parameter spec and the non-array state. Randomness needs no saving: every draw derives
from (seed, round), so the round number is enough to continue exactly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from shoal.errors import CheckpointError
from shoal.params import ParamSpec

FORMAT = "shoal-checkpoint-1"
_ARRAY = "__array__"


@dataclass(frozen=True)
class Checkpoint:
    round: int  # the last completed round; the run continues at round + 1
    params: np.ndarray
    spec: ParamSpec
    state: dict[str, Any]  # {"strategy": {...}, "transforms": [{...}, ...]}


def _split(obj: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    """Replace arrays in a nested structure by references, collecting them in ``arrays``."""
    if isinstance(obj, np.ndarray):
        arrays[path] = np.ascontiguousarray(obj)
        return {_ARRAY: path}
    if isinstance(obj, dict):
        return {str(k): _split(v, f"{path}/{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_split(v, f"{path}/{i}", arrays) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise CheckpointError(f"state entry {path} has type {type(obj).__name__}; use arrays, numbers or strings")


def _join(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY}:
            return arrays[obj[_ARRAY]]
        return {k: _join(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, arrays) for v in obj]
    return obj


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"params": np.ascontiguousarray(ckpt.params)}
    state = _split(ckpt.state, "state", arrays)
    meta = {
        "format": FORMAT,
        "round": str(ckpt.round),
        "spec": ckpt.spec.to_json(),
        "state": json.dumps(state),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(arrays, str(tmp), metadata=meta)
    with open(tmp, "rb") as f:  # the rename must not overtake the data on a crash
        os.fsync(f.fileno())
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; was the run started with an output folder?")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        arrays = load_file(str(path))
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a shoal checkpoint (format {meta.get('format')!r})")
        state = _join(json.loads(meta["state"]), arrays)
        return Checkpoint(int(meta["round"]), arrays["params"], ParamSpec.from_json(meta["spec"]), state)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc}); delete it to start over") from exc
