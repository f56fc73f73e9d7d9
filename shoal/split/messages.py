"""The split-learning protocol as messages: what a device and the server say per batch.

A turn (one device's share of a round) goes::

    device                                   server
    Ready                           ->
                                    <-       Turn (round, seed, epochs, batch size, device weights)
                                             or Wait (retry later / the run is done)
    per batch b = 0, 1, 2, ...:
    Activations(b, cut tensor [, labels]) ->
      vanilla:                      <-       Gradients(b, d loss / d cut)
      U-shaped:                     <-       ServerOutput(b, middle's output)
                OutputGradients(b)  ->       (d loss / d server output; the loss stays on the device)
                                    <-       Gradients(b, d loss / d cut)
    DeviceWeights (the trained device part) ->
                                    <-       Ack (accepted, or the reason it was not)

A message here checks only its own types (it is a value); whether its sizes, numbers and
place in the sequence are acceptable is the receiver's business (:mod:`shoal.split.session`),
because only the receiver knows the model and the turn. Messages compare by identity
(``eq=False``): a field-wise ``==`` over numpy arrays has no single truth value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

# How each field crosses the wire (shoal.split.wire): "int", "bool", "str", "array" (a numpy
# array) or "array?" (a numpy array or None).
WireKinds = dict[str, str]


def _check_round(round: int) -> None:
    if type(round) is not int or round < 0:
        raise ValueError(f"round must be a non-negative int, got {round!r}")


def _check_client(client_id: str) -> None:
    if not isinstance(client_id, str) or not client_id:
        raise ValueError(f"client_id must be a non-empty str, got {client_id!r}")


def _check_batch(batch: int) -> None:
    if type(batch) is not int or batch < 0:
        raise ValueError(f"batch must be a non-negative int, got {batch!r}")


def _check_array(name: str, value: object, ndim_min: int = 1) -> None:
    if not isinstance(value, np.ndarray) or value.ndim < ndim_min:
        raise ValueError(f"{name} must be a numpy array of at least {ndim_min} dimension(s)")


@dataclass(frozen=True, eq=False)
class Ready:
    """A device asks for its turn."""

    client_id: str

    _WIRE: ClassVar[WireKinds] = {"client_id": "str"}

    def __post_init__(self) -> None:
        _check_client(self.client_id)


@dataclass(frozen=True, eq=False)
class Turn:
    """The server hands a device its turn: the device part's weights and how to train."""

    round: int
    client_id: str
    seed: int  # the device's batch order (and seeded activation noise) for this turn
    local_epochs: int
    batch_size: int
    weights: np.ndarray  # the device part(s), flat float32 (bottom, then top if U-shaped)

    _WIRE: ClassVar[WireKinds] = {
        "round": "int",
        "client_id": "str",
        "seed": "int",
        "local_epochs": "int",
        "batch_size": "int",
        "weights": "array",
    }

    def __post_init__(self) -> None:
        _check_round(self.round)
        _check_client(self.client_id)
        for name in ("seed", "local_epochs", "batch_size"):
            v = getattr(self, name)
            if type(v) is not int or v < (0 if name == "seed" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'seed' else 'positive'} int")
        if self.seed >= 2**63:
            raise ValueError("seed must be below 2**63")
        _check_array("weights", self.weights)


@dataclass(frozen=True, eq=False)
class Wait:
    """No turn for this device now: ask again after ``retry_ms``, or stop (``done``)."""

    client_id: str
    retry_ms: int
    done: bool = False

    _WIRE: ClassVar[WireKinds] = {"client_id": "str", "retry_ms": "int", "done": "bool"}

    def __post_init__(self) -> None:
        _check_client(self.client_id)
        if type(self.retry_ms) is not int or self.retry_ms < 0:
            raise ValueError(f"retry_ms must be a non-negative int, got {self.retry_ms!r}")
        if type(self.done) is not bool:
            raise ValueError("done must be a bool")


@dataclass(frozen=True, eq=False)
class Activations:
    """The device part's output on batch ``batch`` ([n, *cut shape]), with the batch's labels
    in vanilla split learning (None when U-shaped: the labels stay on the device)."""

    round: int
    client_id: str
    batch: int
    activations: np.ndarray
    labels: np.ndarray | None = None

    _WIRE: ClassVar[WireKinds] = {
        "round": "int",
        "client_id": "str",
        "batch": "int",
        "activations": "array",
        "labels": "array?",
    }

    def __post_init__(self) -> None:
        _check_round(self.round)
        _check_client(self.client_id)
        _check_batch(self.batch)
        _check_array("activations", self.activations)
        if self.labels is not None:
            _check_array("labels", self.labels)


@dataclass(frozen=True, eq=False)
class _BatchTensor:
    """A tensor that belongs to one batch of one turn."""

    round: int
    client_id: str
    batch: int
    tensor: np.ndarray

    _WIRE: ClassVar[WireKinds] = {"round": "int", "client_id": "str", "batch": "int", "tensor": "array"}

    def __post_init__(self) -> None:
        _check_round(self.round)
        _check_client(self.client_id)
        _check_batch(self.batch)
        _check_array("tensor", self.tensor)


class Gradients(_BatchTensor):
    """The server's answer: d loss / d (the activations it received), same shape."""


class ServerOutput(_BatchTensor):
    """U-shaped: the server part's output on the batch, for the device's top part."""


class OutputGradients(_BatchTensor):
    """U-shaped: d loss / d (the server output), computed on the device with its labels."""


@dataclass(frozen=True, eq=False)
class DeviceWeights:
    """The end of a turn: the device part(s) as trained, flat float32."""

    round: int
    client_id: str
    weights: np.ndarray

    _WIRE: ClassVar[WireKinds] = {"round": "int", "client_id": "str", "weights": "array"}

    def __post_init__(self) -> None:
        _check_round(self.round)
        _check_client(self.client_id)
        _check_array("weights", self.weights)


@dataclass(frozen=True, eq=False)
class Ack:
    """The server's word on a message it does not otherwise answer, or on one it refused:
    a refusal (``accepted`` False) ends the device's turn, with the reason."""

    round: int
    client_id: str
    accepted: bool
    reason: str = ""

    _WIRE: ClassVar[WireKinds] = {"round": "int", "client_id": "str", "accepted": "bool", "reason": "str"}

    def __post_init__(self) -> None:
        _check_round(self.round)
        _check_client(self.client_id)
        if type(self.accepted) is not bool or not isinstance(self.reason, str):
            raise ValueError("accepted must be a bool and reason a str")


SplitMessage = (
    Ready | Turn | Wait | Activations | Gradients | ServerOutput | OutputGradients | DeviceWeights | Ack
)
MESSAGE_TYPES: tuple[type[SplitMessage], ...] = (
    Ready,
    Turn,
    Wait,
    Activations,
    Gradients,
    ServerOutput,
    OutputGradients,
    DeviceWeights,
    Ack,
)
