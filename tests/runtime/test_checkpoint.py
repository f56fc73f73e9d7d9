from __future__ import annotations

import numpy as np
import pytest

from shoal.errors import CheckpointError
from shoal.params import ParamSpec
from shoal.runtime import Checkpoint, load_checkpoint, save_checkpoint


def test_nested_state_round_trips(tmp_path):
    spec = ParamSpec(("w",), ((3,),))
    state = {
        "strategy": {
            "m": np.arange(3, dtype=np.float32),
            "t": 4,
            "beta": 0.9,
            "clients": {"7": np.ones(2)},
        },
        "transforms": [{"residual": np.zeros(3, np.float32), "clip": 1.5}, {}],
    }
    save_checkpoint(tmp_path / "c.safetensors", Checkpoint(5, np.ones(3, np.float32), spec, state))
    back = load_checkpoint(tmp_path / "c.safetensors")
    assert back.round == 5 and back.spec == spec and np.array_equal(back.params, np.ones(3))
    assert back.state["strategy"]["t"] == 4 and back.state["strategy"]["beta"] == 0.9
    assert np.array_equal(back.state["strategy"]["clients"]["7"], np.ones(2))
    assert back.state["transforms"][0]["clip"] == 1.5 and back.state["transforms"][1] == {}
    assert not (tmp_path / "c.safetensors.tmp").exists()


def test_unreadable_or_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none")
    (tmp_path / "junk").write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(tmp_path / "junk")
    with pytest.raises(CheckpointError, match="type object"):
        save_checkpoint(
            tmp_path / "x",
            Checkpoint(1, np.ones(1, np.float32), ParamSpec(("w",), ((1,),)), {"s": object()}),
        )
