"""The update path as a list of small, composable transforms (after pfl-research).

Each transform has a client half, applied in list order to a client's result before it
leaves the device, and a server half, applied in *reverse* order to the whole cohort of
results before the strategy aggregates them. The server half sees the cohort, not one
update, because some steps only make sense on all of them together: secure aggregation
unmasks only the sum, central DP noises only the sum. Such a step returns a single
result that stands for the cohort (its ``num_examples`` the cohort's total). A server half
that cannot use one client's result (wrong payload, bad shape) returns a :class:`Failure`
in its place: one bad client costs its own update, never the round.

Transforms subclass :class:`UpdateTransform` and carry their state (residuals, adaptive
clip norms) in ``state_dict()``. Optional methods, each with a no-op default so the round
loop calls them directly, let a transform speak to the loop: ``begin_round(ctx,
client_ids)`` (before clients train: secure aggregation's key stages; may raise
RoundAbortedError), ``round_metrics()`` (what it measured this round, e.g. epsilon so far,
merged into the round's record), ``stop_reason(ctx)`` (why the next round must not run,
e.g. a spent privacy budget) and ``secret_sampling`` (its guarantee assumes nobody can
tell which clients a round picked: DP's amplification by sampling).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shoal.messages import Failure, Scalar, TrainResult
from shoal.sampling import Sampling

AGGREGATED = "aggregated_clients"  # metric of a result that stands for a merged cohort


@dataclass(frozen=True)
class TransformContext:
    round: int
    run_seed: int
    num_params: int
    sampling: Sampling | None = None  # how the round picked its clients (None on the device)
    # On the device: the client's working state (changed in place, kept when the server
    # counts the result), where error feedback keeps its residual. None on the server.
    state: dict[str, np.ndarray] | None = None


def merged_result(round: int, name: str, counted: Sequence[TrainResult], delta: np.ndarray) -> TrainResult:
    """One result standing for a cohort whose aggregate the transform computed itself
    (central DP, secure or homomorphic aggregation): ``delta`` is the cohort's mean."""
    return TrainResult(
        round,
        name,
        sum(r.num_examples for r in counted),
        {"delta": delta.astype(np.float32)},
        {AGGREGATED: len(counted)},
    )


def clients_in(results: Sequence[TrainResult]) -> int:
    """How many clients these results stand for (a merged result counts its cohort)."""
    return sum(int(r.metrics.get(AGGREGATED, 1)) for r in results)


class UpdateTransform(abc.ABC):
    @abc.abstractmethod
    def client_apply(self, result: TrainResult, ctx: TransformContext) -> TrainResult:
        """Rewrite one client's result on the device (clip, noise, compress, mask)."""

    @abc.abstractmethod
    def server_apply(
        self, results: Sequence[TrainResult], ctx: TransformContext
    ) -> list[TrainResult | Failure]:
        """Undo or complete the step on the server, over the whole cohort."""

    def begin_round(self, ctx: TransformContext, client_ids: Sequence[str]) -> None:
        """Before the cohort trains (secure aggregation's key stages)."""

    def round_metrics(self) -> dict[str, Scalar]:
        """What this transform measured in the round just aggregated."""
        return {}

    def stop_reason(self, ctx: TransformContext) -> str | None:
        """Why round ``ctx.round`` must not run (None: it may)."""
        return None

    def keeps_payload_layout(self) -> bool:
        """True when the client half leaves every payload vector a float32 vector of the
        model's size (clipping, noise), so a server can check them the moment they arrive."""
        return False

    def secret_sampling(self) -> bool:
        """True when its guarantee assumes nobody can predict which clients a round picks."""
        return False

    def payload_bytes(self, num_params: int) -> int | None:
        """The most its client half's payload may take for a model of ``num_params``, when
        that is more than the model's float32 vectors (a ciphertext); None: no more."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def apply_client(
    transforms: Sequence[UpdateTransform], result: TrainResult, ctx: TransformContext
) -> TrainResult:
    for t in transforms:
        result = t.client_apply(result, ctx)
    return result


def apply_server(
    transforms: Sequence[UpdateTransform], results: Sequence[TrainResult], ctx: TransformContext
) -> tuple[list[TrainResult], list[Failure]]:
    """Server halves in reverse order; returns the surviving results and the rejections."""
    out, rejected = list(results), []
    for t in reversed(transforms):
        mixed = t.server_apply(out, ctx)
        out = [r for r in mixed if isinstance(r, TrainResult)]
        rejected += [r for r in mixed if isinstance(r, Failure)]
    return out, rejected
