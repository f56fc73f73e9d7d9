"""The device side of split learning: it asks for its turn and trains its part batch by batch.

It talks through a ``send`` callable (one message out, the server's answer back), so the
same code runs in process (:class:`~shoal.split.runner.InProcessLink`) and over gRPC
(:mod:`shoal.split.net`). It judges every answer as the server judges its messages: the
right type for the batch in flight, the exact shape it expects, finite values. A refused or
broken answer ends the turn with :class:`~shoal.split.errors.Refusal`, never the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from shoal.data.datasets import ArrayDataset
from shoal.rng import NoiseName, Stream, secret_seed, seed_for
from shoal.split.config import SplitConfig
from shoal.split.cut import cut_model, cut_shapes
from shoal.split.errors import Refusal
from shoal.split.halves import DeviceHalf
from shoal.split.messages import (
    Ack,
    Activations,
    DeviceWeights,
    Gradients,
    OutputGradients,
    Ready,
    ServerOutput,
    SplitMessage,
    Turn,
    Wait,
)
from shoal.split.session import tensor_refusal

Send = Callable[[SplitMessage], SplitMessage]
MAX_EPOCHS = 100  # a device trains at most this many epochs in a turn, whatever the server asks


class SplitDevice:
    """A device's half of a split model. Its weights arrive with each turn, so one object can
    serve any number of simulated clients in turn."""

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        input_shape: Sequence[int],
        config: SplitConfig,
    ) -> None:
        # the initial weights do not matter: every turn brings the device part's weights
        parts = cut_model(model_factory(), config.cuts)
        self.shapes = cut_shapes(parts, input_shape)
        self.half = DeviceHalf(parts, self.shapes, input_shape, config.lr)
        self.u_shaped = parts.u_shaped
        self.noise_std, self.noise = config.activation_noise, config.noise
        self.num_params = self.half.flat.spec.num_params

    def request_turn(self, client_id: str, send: Send) -> Turn | Wait:
        reply = send(Ready(client_id))
        if isinstance(reply, Turn | Wait) and reply.client_id == client_id:
            return reply
        raise Refusal(f"the server answered Ready with {_describe(reply)}")

    def train_turn(self, turn: Turn, data: ArrayDataset, send: Send) -> int:
        """Train ``turn`` on ``data`` with the server; returns the batches trained. Raises
        :class:`Refusal` if the server refuses a message or answers out of protocol."""
        if reason := tensor_refusal("the turn's weights", turn.weights, (self.num_params,)):
            raise Refusal(reason)
        if turn.local_epochs > MAX_EPOCHS:
            raise Refusal(
                f"the server asks for {turn.local_epochs} epochs; this device trains at most {MAX_EPOCHS}"
            )
        self.half.load(turn.weights)
        noise = torch.Generator().manual_seed(self._noise_seed(turn))
        batches = 0
        for b, (x, y) in enumerate(_batches(data, turn)):
            sent = self.half.forward(x, self.noise_std, noise)
            labels = None if self.u_shaped else y.numpy()
            reply = send(Activations(turn.round, turn.client_id, b, sent, labels))
            if self.u_shaped:
                out = _expect(reply, ServerOutput, turn, b, (sent.shape[0], *(self.shapes.server_out or ())))
                out_grad, _ = self.half.head(out, y)
                reply = send(OutputGradients(turn.round, turn.client_id, b, out_grad))
            self.half.backward(_expect(reply, Gradients, turn, b, sent.shape))
            batches += 1
        ack = send(DeviceWeights(turn.round, turn.client_id, self.half.weights()))
        if not isinstance(ack, Ack) or not ack.accepted:
            raise Refusal(f"the server did not accept this turn's weights: {_describe(ack)}")
        return batches

    def _noise_seed(self, turn: Turn) -> int:
        # Noise meant to hide something must not be derivable from a seed in a config file.
        if self.noise is NoiseName.SEEDED:
            return seed_for(turn.seed, turn.round, Stream.DP_NOISE, turn.client_id)
        return secret_seed()


def _batches(data: ArrayDataset, turn: Turn) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The turn's minibatches: a fresh permutation per epoch, all drawn from the turn's seed."""
    rng = np.random.default_rng(turn.seed)
    n = len(data)
    for _ in range(turn.local_epochs):
        order = torch.from_numpy(rng.permutation(n))
        for s in range(0, n, turn.batch_size):
            idx = order[s : s + turn.batch_size]
            yield data.x[idx], data.y[idx]


def _describe(msg: SplitMessage) -> str:
    if isinstance(msg, Ack) and not msg.accepted:
        return f"a refusal: {msg.reason}"
    return type(msg).__name__


def _expect(
    reply: SplitMessage, kind: type[Gradients | ServerOutput], turn: Turn, batch: int, shape: Sequence[int]
) -> np.ndarray:
    """The tensor of ``reply`` if it is the ``kind`` answer to this batch; Refusal otherwise."""
    if not isinstance(reply, kind):
        raise Refusal(f"expected {kind.__name__} for batch {batch}, got {_describe(reply)}")
    if (reply.round, reply.client_id, reply.batch) != (turn.round, turn.client_id, batch):
        raise Refusal(f"{kind.__name__} for round {reply.round} batch {reply.batch}, not this batch")
    if reason := tensor_refusal(kind.__name__, reply.tensor, tuple(shape)):
        raise Refusal(reason)
    return reply.tensor
