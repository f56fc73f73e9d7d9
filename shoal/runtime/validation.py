"""What a client may claim: one check, shared by the round loop and the network server.

A result is only as trustworthy as the device that sent it. Before any result reaches a
server transform or a strategy, its vectors must be finite float32 vectors of the model's
size, its ``num_examples`` (the weight it asks for in the average) at most the cap, and
its update's L2 norm, when a bound is set, at most the bound. The network server runs the
same check when the upload arrives, so a device learns at once that its result was
refused (``PutReply.accepted = False`` with the reason) and keeps its old client state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shoal.errors import ConfigError
from shoal.messages import EvalResult, TrainResult
from shoal.scores import is_metric
from shoal.transforms.base import AGGREGATED


@dataclass(frozen=True)
class ResultLimits:
    """Bounds on what one client's result may claim.

    ``max_num_examples``: a larger claim is refused (an attacker's 10^9 would otherwise
    outweigh every honest client). ``max_update_norm``: refuse updates whose ``delta`` is
    longer than this in L2 (None: no bound; a defence of its own, Sun et al. 2019, that
    also stops a finite but huge update)."""

    max_num_examples: int | None = None
    max_update_norm: float | None = None

    def __post_init__(self) -> None:
        if self.max_num_examples is not None and self.max_num_examples < 1:
            raise ConfigError(f"max_num_examples must be >= 1, got {self.max_num_examples}")
        if self.max_update_norm is not None and not self.max_update_norm > 0:
            raise ConfigError(f"max_update_norm must be > 0, got {self.max_update_norm}")


def usable_vector(value: object, num_params: int) -> bool:
    return (
        isinstance(value, np.ndarray)
        and value.dtype == np.float32
        and value.shape == (num_params,)
        and bool(np.isfinite(value).all())
    )


def check_claims(result: TrainResult, limits: ResultLimits) -> str | None:
    """Why ``result`` asks for more than a client may (None: it does not). Run on what the
    client sent, before any server transform merges it with others."""
    cap = limits.max_num_examples
    if cap is not None and result.num_examples > cap:
        return f"claims {result.num_examples} examples; the cap is {cap} (strategy.max_num_examples)"
    return norm_refusal(result, limits.max_update_norm)


def check_eval(result: EvalResult) -> str | None:
    """Why an evaluation cannot be counted (None: it can): it must report a finite loss
    and an accuracy over at least one example; every share it reports (accuracy, the
    ``[eval] metrics``, and the global model's, when it personalizes) must be in [0, 1].
    (It weighs only in the reported scores, never in the model.)"""
    if result.num_examples < 1:
        return f"claims {result.num_examples} evaluation examples"
    for key in ("loss", "accuracy"):
        if key not in result.metrics:
            return f"reports no {key!r}"
    for key, value in result.metrics.items():
        name = key.removeprefix("global_")
        if name not in ("loss", "accuracy") and not is_metric(name):
            continue  # an app's own metric: the server reads it only to report it
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            return f"reports {key} = {value!r}, not a finite number"
        if name != "loss" and not 0.0 <= value <= 1.0:
            return f"reports {key} = {value}, outside [0, 1]"
    return None


def norm_refusal(result: TrainResult, bound: float | None) -> str | None:
    """Why ``result``'s ``delta`` is longer than ``bound`` (None: it is not, or there is no
    float delta to measure yet). Run on what arrives and again on what the server halves
    decoded: a compressed update is measured once decoded, and a merged cohort (secure
    aggregation's sum) is held to the bound too, since the mean of updates within it is
    within it: a longer mean means some device sent more, and the round is dropped."""
    delta = result.payload.get("delta")
    if bound is None or not isinstance(delta, np.ndarray) or delta.dtype.kind != "f":
        return None
    norm = float(np.linalg.norm(delta.astype(np.float64)))
    if math.isfinite(norm) and norm <= bound:
        return None
    if AGGREGATED in result.metrics:
        return (
            f"the mean of {result.metrics[AGGREGATED]} hidden updates has norm {norm:.4g}, above the bound "
            f"{bound:g} every honest update keeps (strategy.max_update_norm): some device sent more"
        )
    return f"update norm {norm:.4g} exceeds the bound {bound:g} (strategy.max_update_norm)"


def check_payload(result: TrainResult, num_params: int, keys: Sequence[str]) -> str | None:
    """Why a vector the strategy reads is unusable (None: every one is a finite float32
    vector of the model's size). Run on decoded results, after the server transforms."""
    for key in keys:
        if not usable_vector(result.payload.get(key), num_params):
            return f"{key!r} is not a finite float32 vector of the model's size"
    return None
