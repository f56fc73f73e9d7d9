"""Secure aggregation as an update transform: the server sees masked vectors and their sum only.

Per round, before clients train, the server runs the protocol's key stages with the
cohort (``begin_round``); each client's half then sends its update as a masked input in
place of the plain delta; the server half unmasks the cohort's sum and hands the
strategy one result, the uniform mean of the survivors' updates (SecAgg sums; weights
would need bounding, as in Bonawitz et al. and DP-FedAvg). If too few clients stay at
any stage the round is abandoned with the reason and the model stays as it was.

What goes into the ring is the encoder's business (:mod:`.encoding`): fixed point by
default, or distributed DP's clipped, rotated, noised integers. ``ring_bits`` narrows the
ring from 32 bits: masks, inputs and the sum live mod 2^R and each masked input travels
packed at R bits a coordinate, so the upload shrinks by 32 / R.

In simulation the devices' protocol halves live in this object (``channel.devices``) and
the server reaches them through an in-process channel of the same bytes a network would
carry; ``channel.vanish`` lets tests and benchmarks make clients drop at a chosen stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from shoal.errors import ConfigError, RoundAbortedError, ShoalError
from shoal.messages import Failure, FailureKind, Scalar, TrainResult
from shoal.rng import Stream, seed_for
from shoal.secagg.client import SecAggClient
from shoal.secagg.common import (
    ACTIVE_BOUND,
    ProtocolError,
    Stage,
    ThresholdError,
    complete_graph,
    harary_graph,
    secagg_plus_degree,
    threshold_for,
)
from shoal.secagg.crypto import MIN_RING_BITS, RING_BITS
from shoal.secagg.encoding import FixedPoint, Ring, RingEncoder
from shoal.secagg.server import SecAggServer
from shoal.secagg.wire import kind_of
from shoal.transforms.base import TransformContext, UpdateTransform, merged_result

MASKED = "secagg_masked"  # the payload key of a masked input (the protocol message, as bytes)


_STAGE_OF = {
    "setup": Stage.ADVERTISE,
    "roster": Stage.SHARE,
    "deliver": Stage.MASKED,
    "consistency": Stage.CONSISTENCY,
    "unmask": Stage.UNMASK,
}


@dataclass
class LocalDevices:
    """The in-process channel: client id -> its protocol half. ``vanish`` maps a client to
    the stage from which it is gone (for tests and benchmarks of dropouts)."""

    devices: dict[str, SecAggClient] = field(default_factory=dict)
    vanish: dict[str, Stage] = field(default_factory=dict)

    def open_round(self, client_ids: Sequence[str]) -> None:
        """Fresh protocol halves for a round's cohort (simulated devices)."""
        self.devices = {cid: SecAggClient() for cid in client_ids}

    def gone(self, client_id: str, stage: Stage) -> bool:
        return client_id in self.vanish and self.vanish[client_id] <= stage

    def call(self, client_id: str, message: bytes) -> bytes | None:
        if self.gone(client_id, _STAGE_OF.get(kind_of(message), Stage.ADVERTISE)):
            return None
        try:
            return self.devices[client_id].handle(message)
        except (ShoalError, ValueError, KeyError):  # a client that cannot go on drops out
            return None


@dataclass
class SecureAggregation(UpdateTransform):
    """Secure aggregation of the cohort's updates, one protocol run per round.

    What each setting defends against:

    - ``threshold`` (t = the smallest integer above ``threshold * k`` for ``k`` neighbours)
      is refused below 2/3: Bonawitz et al. 2017 (Section 6) prove privacy against an
      *active* server colluding with fewer than k/3 clients only for t > 2k/3 (t > n_C
      suffices for an honest-but-curious one). Clients enforce it too, whatever the server
      sends. Price: a round survives fewer than k/3 dropouts per neighbourhood.
    - The ConsistencyCheck (always on) defends against an active server that tells some
      clients "v dropped" and others "v survived" to get both of v's secrets: clients
      reveal shares only after t neighbours signed the same survivor set.
    - Commitments to each self-mask seed (and the public key of each mask key) defend
      against clients that forge shares: one forged share of a secret is outvoted when a
      spare share exists; more, or a client committing falsely to its own seed, abort the
      round (the model stays as it was): a wrong sum never becomes a model, though a
      hostile client can still deny a round. Malformed messages cost only their sender.

    Not defended: the signing and agreement keys reach clients through the server (there
    is no PKI; Bonawitz et al. assume one), so a server that substitutes keys or invents
    (Sybil) clients is outside this model. In SecAgg+ the checks are per neighbourhood,
    and the server chooses the graph; Bell et al. 2020 analyse that setting separately.
    """

    bound: float = 1.0  # fixed point: every update coordinate is clamped to [-bound, bound] (clip first)
    threshold: float = ACTIVE_BOUND  # share of each neighbourhood that must stay; >= 2/3 (above)
    plus: bool = False  # SecAgg+: masks and shares along a random O(log n)-regular graph
    degree: int | None = None  # SecAgg+ graph degree; None: about 3 log2(n)
    # How the server reaches devices: the in-process LocalDevices in simulation (it also
    # holds a real device's own protocol half), the network backend's channel in deployment.
    channel: Any = field(default_factory=LocalDevices)
    # Z_2^ring_bits: 32 as always; fewer bits send fewer bytes, on a coarser grid
    ring_bits: int = RING_BITS
    # float update <-> ring; None: fixed point at ``bound``, rounding stochastically below
    # 32 bits (encoding.py says why); distributed DP brings its own (privacy/distributed.py)
    encoder: RingEncoder | None = None
    _server: SecAggServer | None = field(default=None, init=False, repr=False)
    _ring: Ring | None = field(default=None, init=False, repr=False)
    _metrics: dict[str, Scalar] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.bound > 0:
            raise ConfigError(f"secure aggregation bound must be > 0, got {self.bound}")
        if not MIN_RING_BITS <= self.ring_bits <= RING_BITS:
            raise ConfigError(
                f"secure aggregation ring_bits must be in [{MIN_RING_BITS}, {RING_BITS}], "
                f"got {self.ring_bits}"
            )
        if self.encoder is None:
            self.encoder = FixedPoint(self.bound, stochastic=self.ring_bits < RING_BITS)
        if not ACTIVE_BOUND <= self.threshold < 1:
            raise ConfigError(
                f"secure aggregation threshold must be in [2/3, 1), got {self.threshold}: a secret needs "
                "t = floor(threshold * k) + 1 of a client's k neighbours, and Bonawitz et al. 2017 prove "
                "privacy against an active server only for t > 2k/3 (with fewer than k/3 corrupt clients)"
            )

    def begin_round(self, ctx: TransformContext, client_ids: Sequence[str]) -> None:
        """Stages 0-1 with the round's cohort; RoundAbortedError if too few take part."""
        n = len(client_ids)
        if n < 2:
            raise RoundAbortedError("secure aggregation needs at least 2 clients in a round")
        if self.plus:
            degree = self.degree or secagg_plus_degree(n)
            degree = n - 1 if degree >= n - 1 else degree - degree % 2  # complete, or even
            graph = harary_graph(n, degree, seed_for(ctx.run_seed, ctx.round, Stream.TRANSFORM, "secagg+"))
        else:
            graph = complete_graph(n)
        smallest = min(len(v) for v in graph.values())
        t = threshold_for(smallest, self.threshold)
        encoder = self._encoder()
        self._ring = ring = Ring(self.ring_bits, encoder.scale(n, self.ring_bits, ctx.num_params))
        self.channel.open_round(client_ids)
        self._server = SecAggServer(
            ctx.round, list(client_ids), t, encoder.dimension(ctx.num_params), graph, self.channel,
            encoder.bound, ring.scale, ring.bits,
        )  # fmt: skip
        try:
            self._server.setup()
        except (ThresholdError, ProtocolError) as exc:
            raise RoundAbortedError(str(exc)) from None
        self._metrics = {"secagg_threshold": t, "secagg_degree": smallest}

    # -- on the device: the update leaves masked ---------------------------------------------
    def client_apply(self, result: TrainResult, ctx: TransformContext) -> TrainResult:
        device = self.channel.devices.get(result.client_id)
        if device is None:
            raise ValueError("this client holds no secure-aggregation keys for the round")
        if self.channel.gone(result.client_id, Stage.MASKED):
            raise ConnectionError("dropped before sending its masked input")
        setup = device.setup  # the ring as the server set it (a device has no begin_round)
        ring = Ring(setup.ring_bits, setup.scale)
        encoded = self._encoder().encode(result.payload["delta"], ring, ctx, result.client_id)
        message = device.masked_input(encoded)
        return replace(result, payload={MASKED: np.frombuffer(message, dtype=np.uint8)})

    # -- on the server: only the sum is ever unmasked -----------------------------------------
    def server_apply(
        self, results: Sequence[TrainResult], ctx: TransformContext
    ) -> list[TrainResult | Failure]:
        server, ring, encoder = self._server, self._ring, self._encoder()
        if server is None or ring is None or server.round != ctx.round:
            return [
                Failure(r.round, r.client_id, FailureKind.REJECTED, "no secure-aggregation round")
                for r in results
            ]
        masked = {r.client_id: r.payload[MASKED].tobytes() for r in results if MASKED in r.payload}
        out: list[TrainResult | Failure] = [
            Failure(r.round, r.client_id, FailureKind.REJECTED, "expected a masked input")
            for r in results
            if MASKED not in r.payload
        ]
        self._server = None  # one aggregation per round
        try:
            total = server.aggregate(masked)
        except (ThresholdError, ProtocolError) as exc:  # the model stays as it was
            kind = FailureKind.DROPPED if isinstance(exc, ThresholdError) else FailureKind.REJECTED
            lost = [Failure(r.round, r.client_id, kind, str(exc)) for r in results if MASKED in r.payload]
            return out + lost
        self._metrics.update(secagg_bytes_down=server.bytes_sent, secagg_bytes_up=server.bytes_received)
        counted = [r for r in results if r.client_id in masked and r.client_id in server.survivors_of_input]
        if reason := encoder.refusal(len(counted), ring, ctx):  # e.g. too little DP noise survived
            return out + [Failure(r.round, r.client_id, FailureKind.DROPPED, reason) for r in counted]
        mean = encoder.decode(total, len(counted), ring, ctx)
        return [merged_result(ctx.round, "secagg-aggregate", counted, mean), *out]

    def _encoder(self) -> RingEncoder:
        assert self.encoder is not None  # set in __post_init__
        return self.encoder

    def round_metrics(self) -> dict[str, Scalar]:
        return {**self._metrics, **self._encoder().round_metrics()}

    def stop_reason(self, ctx: TransformContext) -> str | None:
        return self._encoder().stop_reason(ctx, self.ring_bits)

    def state_dict(self) -> dict[str, Any]:
        # keys are fresh every round; only the encoder may carry state (a DP ledger)
        return self._encoder().state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._encoder().load_state_dict(state)
