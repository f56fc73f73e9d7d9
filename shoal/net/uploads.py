"""What a device may upload: how many bytes, and whether what arrived answers its task.

The size limits follow the model, not a constant: a train result may take what the
strategy's result holds (``delta``, plus SCAFFOLD's ``control_delta``) for this many
parameters, plus room for the header and metrics; an eval result or a Failure only the
room; a secure-aggregation answer a sealed share per peer. The server checks the limit on
the first chunk, before it keeps a byte (:class:`~shoal.net.chunks.ChunkReader`).

:func:`refusal` is the server's check of a decoded upload, run when it arrives so the
device learns at once (``accepted=False`` with the reason) and keeps its old client
state; the round loop then counts the refusal as that client's ``Failure(rejected)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from shoal.messages import (
    EvalResult,
    EvalTask,
    Failure,
    Message,
    Scalar,
    TrainResult,
    TrainTask,
    encoded_size,
)
from shoal.runtime.validation import ResultLimits, check_claims, check_eval, check_payload
from shoal.transforms.downlink import model_size

# A message's JSON header, metric names and values, a Failure's reason: all far below this.
OVERHEAD_BYTES = 64 << 10
# One peer's part of a secure-aggregation answer: a sealed pair of Shamir shares, hex-encoded
# (about 700 bytes), or one share of the unmasking stage; twice that leaves room.
SECAGG_PEER_BYTES = 2 << 10


def train_result_bytes(num_params: int, payload_keys: Sequence[str], payload_bytes: int | None = None) -> int:
    """The most a train result of this model may take on the wire; ``payload_bytes``: what
    a transform's payload may take instead, when more (CKKS ciphertexts)."""
    template = TrainResult(
        round=2**31,
        client_id="x" * 128,
        num_examples=2**62,
        payload={key: np.zeros(num_params, np.float32) for key in payload_keys},
    )
    return encoded_size(template) + max(payload_bytes or 0, 0) + OVERHEAD_BYTES


def secagg_answer_bytes(population: int) -> int:
    """The most a device's secure-aggregation answer may take in a run of ``population``."""
    return OVERHEAD_BYTES + SECAGG_PEER_BYTES * max(population, 1)


@dataclass(frozen=True)
class UploadRules:
    """How the server judges uploads.

    ``payload_keys``: the vectors the strategy reads (they size a train result's limit).
    ``check_payload``: check them at upload; False when the run's update transforms
    rewrite the payload on the device (half precision, masks), where the round loop checks
    them after the server halves instead. ``num_params``: None takes each task's size."""

    limits: ResultLimits = field(default_factory=ResultLimits)
    num_params: int | None = None
    payload_keys: tuple[str, ...] = ("delta",)
    check_payload: bool = True
    payload_bytes: int | None = None  # a transform's bigger payload (UpdateTransform.payload_bytes)

    def params_of(self, task: TrainTask | EvalTask) -> int:
        if self.num_params is not None:
            return self.num_params
        return model_size(task) if isinstance(task, TrainTask) else int(task.params.shape[0])


def _non_finite(metrics: Mapping[str, Scalar]) -> str | None:
    for name, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"metric {name!r} is {value}"
    return None


def refusal(task: TrainTask | EvalTask, message: Message, client_id: str, rules: UploadRules) -> str | None:
    """Why ``message`` is not an acceptable answer to ``task`` from ``client_id`` (None: it is)."""
    if (
        not isinstance(message, TrainResult | EvalResult | Failure)
        or message.client_id != client_id
        or message.round != task.round
    ):
        return "the upload does not answer this client's task"
    if isinstance(message, Failure):
        return None  # the device's own account of why it could not answer
    if isinstance(task, TrainTask) != isinstance(message, TrainResult):
        return "result of the wrong kind"
    if reason := _non_finite(message.metrics):
        return reason
    if isinstance(message, EvalResult):
        return check_eval(message)
    if isinstance(message, TrainResult):
        if reason := check_claims(message, rules.limits):
            return reason
        if rules.check_payload:
            return check_payload(message, rules.params_of(task), rules.payload_keys)
    return None
