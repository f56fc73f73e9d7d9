"""The model on its way down: the broadcast compressed, each device training from what it got.

The server encodes the round's model once with a codec from the uplink's family (float16,
or 8-bit levels rounded to the nearest, blocks of 1,024 with their own range) and sends
every task that encoding in place of the float32 vector: ``task.params`` is empty, the
encoded arrays ride in ``task.arrays`` under ``downlink:``-prefixed keys, and
``task.config`` names the codec and the model's size. ``bytes_down`` is then what really
travels, in simulation and over gRPC. The device decodes (:func:`received`) before it
trains, and its update is measured from the model it received, so the server adds it to
its own float32 model and the rounding error does not build up over rounds (the server
never trains on a rounded model; Caldas et al. 2018 compress the downlink the same way).

Deltas against each device's last version would save more where the same devices come
back every round (cross-silo); at the edge most devices see a model once, so it is not
built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from shoal.config.names import CompressorName
from shoal.messages import TrainTask
from shoal.transforms.base import TransformContext
from shoal.transforms.compress import Compressor
from shoal.transforms.half_precision import HalfPrecision
from shoal.transforms.quantize import StochasticQuantization

CODEC, SIZE, PREFIX = "downlink", "downlink_params", "downlink:"
_CODECS: dict[str, Compressor] = {
    CompressorName.HALF.value: HalfPrecision(),
    CompressorName.QUANTIZE.value: StochasticQuantization(bits=8, stochastic=False),
}


def codec_for(name: CompressorName | str) -> Compressor:
    if str(name) not in _CODECS:
        raise ValueError(f"the model travels as {' or '.join(_CODECS)}, not {name!r}")
    return _CODECS[str(name)]


def compress_tasks(tasks: Sequence[TrainTask], name: CompressorName | str) -> list[TrainTask]:
    """Each task with its model encoded (once for every task sharing one params vector)."""
    codec, encoded = codec_for(name), {}
    out = []
    for t in tasks:
        if id(t.params) not in encoded:
            ctx = TransformContext(t.round, 0, t.params.shape[0])
            encoded[id(t.params)] = codec.encode(t.params.astype(np.float32), "", ctx)
        arrays = {**t.arrays, **{PREFIX + k: v for k, v in encoded[id(t.params)].items()}}
        config = {**t.config, CODEC: str(name), SIZE: int(t.params.shape[0])}
        out.append(dataclasses.replace(t, params=np.zeros(0, np.float32), arrays=arrays, config=config))
    return out


def model_size(task: TrainTask) -> int:
    """How many parameters the task's model has, whether or not it travels compressed."""
    return int(task.config[SIZE]) if CODEC in task.config else int(task.params.shape[0])


def received(task: TrainTask) -> TrainTask:
    """On the device: the task with its model decoded (unchanged if it came as float32).
    Raises ValueError on a malformed encoding."""
    if CODEC not in task.config:
        return task
    codec, n = codec_for(str(task.config[CODEC])), model_size(task)
    if task.params.shape != (0,) or n < 0:
        raise ValueError("a compressed model must come with empty params and its size")
    sent = {k[len(PREFIX) :]: v for k, v in task.arrays.items() if k.startswith(PREFIX)}
    if set(sent) != set(codec.keys):
        raise ValueError(f"a {codec.label} model needs arrays {sorted(codec.keys)}, got {sorted(sent)}")
    params = codec.decode(sent, task.client_id, TransformContext(task.round, 0, n))
    if isinstance(params, str):
        raise ValueError(f"the model could not be decoded: {params}")
    arrays = {k: v for k, v in task.arrays.items() if not k.startswith(PREFIX)}
    config = {k: v for k, v in task.config.items() if k not in (CODEC, SIZE)}
    return dataclasses.replace(task, params=params, arrays=arrays, config=config)
