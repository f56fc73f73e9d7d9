"""The server side of split learning: it plans rounds, hands out turns, trains its part on
each device's batches and keeps (or averages) what the devices send back.

Everything a device says arrives through :meth:`SplitServer.handle`, one message in, one
answer out, the same whether the message came through the in-process link or over gRPC.
Every message is judged by the device's :class:`~shoal.split.session.Session` before it is
used; the first refusal ends that device's turn and discards it (SplitNN rolls its server
part back to where the turn began, as does SplitFed-V2; V1 drops the device's server copy),
and the server goes on with the others.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from shoal.params import FlatModule
from shoal.rng import Stream, generator, seed_for
from shoal.split.compute import Meter
from shoal.split.config import SplitConfig, SplitProtocol
from shoal.split.cut import SplitParts, cut_model, cut_shapes
from shoal.split.errors import Refusal
from shoal.split.halves import ServerHalf
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
from shoal.split.session import CutLimits, Session
from shoal.strategy.aggregators import weighted_mean

RETRY_MS = 200  # how soon a device without a turn should ask again


def build_parts(model_factory: Callable[[], nn.Module], config: SplitConfig) -> SplitParts:
    """The model drawn from the run's seed (as ``shoal.simulate`` draws it), cut; global RNG
    state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return cut_model(model_factory(), config.cuts)


@dataclass
class _Turn:
    session: Session
    half: ServerHalf
    start: np.ndarray | None  # a shared server part as the turn found it, to roll back to


@dataclass
class RoundOutcome:
    """What a round left: who finished, who was refused and why, the server's compute."""

    round: int
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    examples: int = 0
    server_seconds: float = 0.0
    server_flops: int = 0


class SplitServer:
    """Rounds, turns and the server's part of the model."""

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        input_shape: Sequence[int],
        num_classes: int,
        config: SplitConfig,
    ) -> None:
        self.config = config
        self.parts = build_parts(model_factory, config)
        self.shapes = cut_shapes(self.parts, input_shape)
        self.meter = Meter()
        self._device = FlatModule(nn.ModuleList(self.parts.device_modules()))  # the global device part
        self._shared = ServerHalf(self.parts.middle, self.shapes, config.lr, self.meter)
        self.limits = CutLimits.build(config, self.shapes, num_classes, self._device.spec.num_params)
        self._lock = threading.Lock()  # handle() may be called from several network threads
        self.round = -1
        self.finished = False  # the run is over: every Ready gets Wait(done=True)
        self._queue: list[str] = []  # this round's devices that have not finished their turn
        self._turns: dict[str, _Turn] = {}  # open turns
        self._kept: list[tuple[int, np.ndarray, np.ndarray | None]] = []  # SplitFed: (n, device, server)
        self._outcome = RoundOutcome(-1)

    # -- the run's side ---------------------------------------------------------------------

    def begin_round(self, round: int, client_ids: Sequence[str]) -> list[str]:
        """Start ``round`` with its devices, picked from ``client_ids`` by the run's seed
        (all of them unless ``clients_per_round``); returns them in turn order."""
        with self._lock:
            if self._queue or self._turns:
                raise RuntimeError(f"round {self.round} is still running")
            ids = sorted(client_ids)
            k = self.config.clients_per_round
            if k is not None and k < len(ids):
                order = generator(self.config.seed, round, Stream.SELECTION).choice(
                    len(ids), k, replace=False
                )
                ids = [ids[i] for i in order]
            self.round, self._queue, self._kept = round, list(ids), []
            self._outcome = RoundOutcome(round)
            return list(ids)

    @property
    def round_complete(self) -> bool:
        with self._lock:
            return not self._queue and not self._turns

    def waiting_for(self) -> list[str]:
        """Devices of this round that have not finished (open turns first)."""
        with self._lock:
            return [*self._turns, *(c for c in self._queue if c not in self._turns)]

    def expire(self, client_id: str, reason: str) -> None:
        """Give up on a device this round (the network's deadline): its turn is discarded."""
        with self._lock:
            if client_id in self._queue:
                self._refuse(client_id, reason)

    def finish_round(self) -> RoundOutcome:
        """Close the round: SplitFed averages what it kept (FedAvg, weighted by the examples
        each device trained on, counted by the server); SplitNN already holds its model."""
        with self._lock:
            for cid in list(self._queue):
                self._refuse(cid, "the round ended before this device's turn finished")
            if self._kept and self.config.protocol is not SplitProtocol.SPLITNN:
                n = np.array([k[0] for k in self._kept], dtype=np.float64)
                self._device.load(weighted_mean([k[1] for k in self._kept], n))
                if self.config.protocol is SplitProtocol.SPLITFED_V1:
                    copies = [k[2] for k in self._kept if k[2] is not None]
                    self._shared.flat.load(weighted_mean(copies, n))
            out = self._outcome
            out.server_seconds, out.server_flops = self.meter.take()
            return out

    def model(self) -> nn.Module:
        """The whole model with the current global weights (shares the server's parameters)."""
        return self.parts.whole()

    def device_weights(self) -> np.ndarray:
        return self._device.numpy()

    # -- the devices' side ------------------------------------------------------------------

    def handle(self, msg: SplitMessage, caller: str | None = None) -> SplitMessage:
        """The answer to one message from a device. ``caller`` is the authenticated id over the
        network: a message naming another device is refused."""
        with self._lock:
            cid = msg.client_id
            if caller is not None and cid != caller:
                return self._refuse(caller, f"the message names client {cid!r}, the call is from {caller!r}")
            try:
                return self._dispatch(msg)
            except Refusal as exc:
                return self._refuse(cid, exc.reason)

    def _dispatch(self, msg: SplitMessage) -> SplitMessage:
        if isinstance(msg, Ready):
            return self._ready(msg.client_id)
        turn = self._turns.get(msg.client_id)
        if turn is None:
            return Ack(max(self.round, 0), msg.client_id, False, "this device has no open turn")
        if isinstance(msg, Activations):
            return self._activations(turn, msg)
        if isinstance(msg, OutputGradients):
            return self._output_gradients(turn, msg)
        if isinstance(msg, DeviceWeights):
            return self._weights(turn, msg)
        raise Refusal(f"a device does not send {type(msg).__name__} messages")

    def _ready(self, cid: str) -> Turn | Wait | Ack:
        if cid in self._turns:
            raise Refusal("asked for a new turn in the middle of its turn")
        if self.finished:
            return Wait(cid, 0, done=True)
        # Only V1's turns run side by side: each has its own server copy. SplitNN and V2 share one
        # server part, so their turns take it one at a time (V2's server, in Thapa et al., also
        # processes the devices' batches one device after another).
        parallel = self.config.protocol is SplitProtocol.SPLITFED_V1
        if cid in self._queue and (parallel or (not self._turns and self._queue[0] == cid)):
            return self._start(cid)
        return Wait(cid, RETRY_MS)

    def _start(self, cid: str) -> Turn:
        cfg = self.config
        if cfg.protocol is SplitProtocol.SPLITFED_V1:  # its own copy, from this round's global part
            middle = copy.deepcopy(self.parts.middle)
            half = ServerHalf(middle, self.shapes, cfg.lr, self.meter, self._shared.flops)
        else:
            half = self._shared
        start = None if cfg.protocol is SplitProtocol.SPLITFED_V1 else self._shared.flat.numpy()
        self._turns[cid] = _Turn(Session(self.round, cid, self.limits), half, start)
        seed = seed_for(cfg.seed, self.round, Stream.CLIENT, cid)
        return Turn(self.round, cid, seed, cfg.local_epochs, cfg.batch_size, self._device.numpy())

    def _activations(self, turn: _Turn, msg: Activations) -> Gradients | ServerOutput:
        if reason := turn.session.check_activations(msg):
            raise Refusal(reason)
        if self.limits.u_shaped:
            out = turn.half.forward(msg.activations)
            turn.session.accept_activations(msg)
            return ServerOutput(msg.round, msg.client_id, msg.batch, out)
        assert msg.labels is not None  # the session refuses vanilla activations without labels
        grad, _ = turn.half.train_step(msg.activations, msg.labels)
        turn.session.accept_activations(msg)
        return Gradients(msg.round, msg.client_id, msg.batch, grad)

    def _output_gradients(self, turn: _Turn, msg: OutputGradients) -> Gradients:
        if reason := turn.session.check_output_gradients(msg):
            raise Refusal(reason)
        grad = turn.half.backward(msg.tensor)
        turn.session.accept_output_gradients()
        return Gradients(msg.round, msg.client_id, msg.batch, grad)

    def _weights(self, turn: _Turn, msg: DeviceWeights) -> Ack:
        if reason := turn.session.check_weights(msg):
            raise Refusal(reason)
        cid, n = msg.client_id, turn.session.examples
        if self.config.protocol is SplitProtocol.SPLITNN:
            self._device.load(msg.weights)  # the next device starts from these
        else:
            server = turn.half.flat.numpy() if self.config.protocol is SplitProtocol.SPLITFED_V1 else None
            self._kept.append((n, np.array(msg.weights, dtype=np.float32), server))
        del self._turns[cid]
        self._queue.remove(cid)
        self._outcome.accepted.append(cid)
        self._outcome.examples += n
        return Ack(msg.round, cid, True)

    def _refuse(self, cid: str, reason: str) -> Ack:
        """End ``cid``'s turn this round and discard it; the answer says why."""
        turn = self._turns.pop(cid, None)
        if turn is not None and turn.start is not None:
            self._shared.flat.load(turn.start)  # a shared part: as if the turn never happened
        if cid in self._queue:
            self._queue.remove(cid)
            self._outcome.refused[cid] = reason
        return Ack(max(self.round, 0), cid, False, reason)
