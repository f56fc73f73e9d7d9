"""What the server accepts from a device during its turn, judged message by message.

A :class:`Session` is one device's turn as the server sees it. Each check returns the
reason a message is refused, or None; the server ends the session at the first reason
(the device's turn is lost, nothing else). Every bound comes from the model and the run's
settings (:class:`CutLimits`), never from what the device claims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shoal.split.config import SplitConfig
from shoal.split.cut import CutShapes
from shoal.split.messages import Activations, DeviceWeights, OutputGradients

HEADER_SLACK = 4096  # bytes a message's magic and JSON header may take on top of its arrays


@dataclass(frozen=True)
class CutLimits:
    """The bounds of everything a device may send, derived from the model and the config."""

    batch_size: int
    cut_shape: tuple[int, ...]  # per example, what the bottom part outputs
    server_out_shape: tuple[int, ...] | None  # per example, what the middle outputs (U-shaped)
    num_classes: int
    device_params: int  # length of the device part's flat weight vector
    max_batches: int  # batches per turn

    @classmethod
    def build(cls, config: SplitConfig, shapes: CutShapes, num_classes: int, device_params: int) -> CutLimits:
        return cls(
            config.batch_size, shapes.cut, shapes.server_out, num_classes, device_params, config.max_batches
        )

    @property
    def u_shaped(self) -> bool:
        return self.server_out_shape is not None

    def max_message_bytes(self) -> int:
        """The largest message a device may send: a full batch of activations and labels, a
        full batch of output gradients, or its weights, plus the header."""
        acts = self.batch_size * (4 * math.prod(self.cut_shape) + 8)
        grads = self.batch_size * 4 * math.prod(self.server_out_shape or ())
        return max(acts, grads, 4 * self.device_params) + HEADER_SLACK


def tensor_refusal(what: str, array: np.ndarray, shape: tuple[int, ...]) -> str | None:
    """Why ``array`` is not a finite float32 tensor of exactly ``shape``, or None."""
    if array.dtype != np.float32:
        return f"{what} must be float32, got {array.dtype}"
    if tuple(array.shape) != shape:
        return f"{what} has shape {list(array.shape)}, expected {list(shape)}"
    if not np.isfinite(array).all():
        return f"{what} contains NaN or infinity"
    return None


@dataclass
class Session:
    """One device's turn: where it is in the sequence and what it has sent so far."""

    round: int
    client_id: str
    limits: CutLimits
    next_batch: int = 0
    open_batch: int | None = None  # U-shaped: the batch whose output gradients are due
    open_size: int = 0  # examples in that batch
    examples: int = 0  # examples trained on this turn (all epochs): the turn's averaging weight

    def _addressed(self, round: int, client_id: str) -> str | None:
        if client_id != self.client_id:
            return f"the message names client {client_id!r}, but the call is from {self.client_id!r}"
        if round != self.round:
            return f"the message is for round {round}, but this turn is round {self.round}"
        return None

    def check_activations(self, msg: Activations) -> str | None:
        lim = self.limits
        if reason := self._addressed(msg.round, msg.client_id):
            return reason
        if self.open_batch is not None:
            return (
                f"activations for batch {msg.batch} while batch {self.open_batch}'s output gradients are due"
            )
        if msg.batch != self.next_batch:
            return f"batch {msg.batch} is out of sequence: expected batch {self.next_batch}"
        if msg.batch >= lim.max_batches:
            return f"more than {lim.max_batches} batches in one turn (the run's max_num_examples and epochs)"
        n = msg.activations.shape[0] if msg.activations.ndim else 0
        if not 1 <= n <= lim.batch_size:
            return f"a batch of {n} examples; this run's batches hold 1 to {lim.batch_size}"
        if reason := tensor_refusal("activations", msg.activations, (n, *lim.cut_shape)):
            return reason
        return self._label_refusal(msg.labels, n)

    def _label_refusal(self, labels: np.ndarray | None, n: int) -> str | None:
        if self.limits.u_shaped:
            # the labels stay on the device in U-shaped learning; a copy here is a protocol error
            return None if labels is None else "labels sent in U-shaped split learning, where they stay put"
        if labels is None:
            return "vanilla split learning needs the batch's labels with its activations"
        if labels.dtype != np.int64 or tuple(labels.shape) != (n,):
            return f"labels must be int64[{n}], got {labels.dtype}{list(labels.shape)}"
        if labels.size and (labels.min() < 0 or labels.max() >= self.limits.num_classes):
            return f"labels out of range: this model has classes 0..{self.limits.num_classes - 1}"
        return None

    def accept_activations(self, msg: Activations) -> None:
        """Record an accepted batch: the sequence moves on (or waits for output gradients)."""
        n = int(msg.activations.shape[0])
        self.examples += n
        if self.limits.u_shaped:
            self.open_batch, self.open_size = msg.batch, n
        else:
            self.next_batch += 1

    def check_output_gradients(self, msg: OutputGradients) -> str | None:
        if reason := self._addressed(msg.round, msg.client_id):
            return reason
        if not self.limits.u_shaped:
            return "output gradients in vanilla split learning, where the server computes the loss"
        if self.open_batch is None or msg.batch != self.open_batch:
            return f"output gradients for batch {msg.batch}, but no such batch is waiting for them"
        shape = (self.open_size, *(self.limits.server_out_shape or ()))
        return tensor_refusal("output gradients", msg.tensor, shape)

    def accept_output_gradients(self) -> None:
        self.open_batch = None
        self.next_batch += 1

    def check_weights(self, msg: DeviceWeights) -> str | None:
        if reason := self._addressed(msg.round, msg.client_id):
            return reason
        if self.open_batch is not None:
            return f"the turn ended while batch {self.open_batch}'s output gradients were due"
        if self.next_batch == 0:
            return "the turn ended without a single batch"
        return tensor_refusal("device weights", msg.weights, (self.limits.device_params,))
