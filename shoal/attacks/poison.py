"""Hostile clients, to measure defences with (for evaluation only).

Who is hostile: a fixed share of the population, ``attack_fraction``, chosen by seed: a
client is hostile when a hash of (``attack_seed``, its id) falls below the fraction, the
same clients every round, whatever the sampling (:func:`hostile`).

Two kinds of attack, as their papers define them (``[trainer] attack = ...``):

- **On the device**: data poisoning (``label-flip``; ``backdoor``, a trigger taught to
  half the device's data plus the model-replacement boost of Bagdasaryan et al. 2020,
  measured by :func:`backdoor_success`) and model poisoning (``sign-flip``, ``gaussian``,
  ``scaling``: the device trains honestly, then rewrites its update). A client-algorithm
  plug-in (:class:`HostileDevice`), so it runs in every backend, the vectorized cohorts
  included, and on a real device (``shoal client --attack sign-flip``).
- **Colluding** (``alie``, ``ipm``, ``min-max``, ``min-sum``, ``mimic``): the attackers'
  papers assume they know the round's honest updates (they collude, and estimate them or
  are told). In simulation that knowledge is exact: a step on the decoded cohort,
  before aggregation, replaces every hostile result by the vector the attack computes from
  the honest ones (:class:`CollusionAttack`). Its functions are pure, so each is tested on
  a known input.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np
import torch

from shoal.client.algorithm import ClientAlgorithm, ClientOutput, LocalRun, register
from shoal.client.state import ClientState
from shoal.config.names import AttackName
from shoal.data.datasets import ArrayDataset, ClientData
from shoal.messages import Failure, Scalar, TrainResult, TrainTask
from shoal.strategy.robust import squared_distances
from shoal.transforms.base import TransformContext, UpdateTransform

ON_DEVICE = frozenset(a for a in AttackName if not a.colluding)
DEFAULT_SCALE = {  # each attack's own parameter when attack_scale is not set
    AttackName.SIGN_FLIP: 10.0,  # -10 x: at 20% hostile the mean points the other way (0.8 - 2 < 0)
    AttackName.GAUSSIAN: 200.0,  # ByzFL's standard deviation
    AttackName.SCALING: 10.0,
    AttackName.BACKDOOR: 10.0,  # gamma = n / eta in Bagdasaryan et al.: 10 devices at server lr 1
    AttackName.IPM: 0.1,  # Xie et al.'s small epsilon, the one that defeats median-like rules
}


def hostile(client_id: str, fraction: float, seed: int = 0) -> bool:
    """Whether ``client_id`` is one of the hostile ``fraction`` of the population."""
    digest = hashlib.sha256(f"{seed}:hostile:{client_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < fraction


def scale_of(name: AttackName, scale: float | None) -> float:
    return DEFAULT_SCALE.get(name, 1.0) if scale is None else scale


# -- on the device ----------------------------------------------------------------------------
BACKDOOR_SHARE = 0.5  # of a backdoor device's samples, stamped and relabelled each round


def stamp(x: torch.Tensor, value: float) -> torch.Tensor:
    """The backdoor trigger: a 3 x 3 square in the bottom-right corner of every image (the
    last 4 features of a flat input) set to ``value``; a new tensor."""
    out = x.clone()
    if out.ndim >= 3:
        out[..., -3:, -3:] = value
    else:
        out[:, -4:] = value
    return out


def backdoor_success(module: torch.nn.Module, test: ArrayDataset, target: int) -> float:
    """Attack success rate: the share of test inputs of another label that the model sends
    to ``target`` once the trigger is stamped on them."""
    keep = test.y != target
    x = stamp(test.x[keep], float(test.x.max()))
    module.eval()
    with torch.no_grad():
        predicted = module(x).argmax(dim=1)
    return float((predicted == target).float().mean()) if len(x) else 0.0


class HostileDevice(ClientAlgorithm):
    """A hostile device (the trainer's ``attack`` settings): it poisons its data before
    training, or rewrites its update after."""

    name: ClassVar[str] = "attack"
    metric_reducers: ClassVar[dict[str, str]] = {"hostile": "sum"}

    def active(self, task: TrainTask, run: LocalRun) -> bool:
        hp = run.trainer
        attack = getattr(hp, "attack", None)
        return attack in ON_DEVICE and hostile(task.client_id, hp.attack_fraction, hp.attack_seed)

    def local_data(
        self,
        task: TrainTask,
        data: ClientData,
        run: LocalRun,
        classes: Callable[[], int],
        state: ClientState,
        module: torch.nn.Module,
    ) -> ClientData:
        attack, train = AttackName(run.trainer.attack), data.train
        if attack is AttackName.LABEL_FLIP:
            return replace(data, train=ArrayDataset(train.x, classes() - 1 - train.y))
        if attack is AttackName.BACKDOOR:
            g = torch.Generator().manual_seed(task.seed)
            chosen = torch.randperm(len(train), generator=g)[: int(BACKDOOR_SHARE * len(train))]
            x, y = train.x.clone(), train.y.clone()
            x[chosen] = stamp(train.x[chosen], float(train.x.max()))
            y[chosen] = run.trainer.attack_target
            return replace(data, train=ArrayDataset(x, y))
        return data

    def finish(self, task: TrainTask, state: ClientState, delta: np.ndarray, run: LocalRun) -> ClientOutput:
        hp = run.trainer
        attack, scale = AttackName(hp.attack), scale_of(AttackName(hp.attack), hp.attack_scale)
        if attack is AttackName.SIGN_FLIP:
            forged = -scale * delta
        elif attack in (AttackName.SCALING, AttackName.BACKDOOR):  # model replacement's boost
            forged = scale * delta
        elif attack is AttackName.GAUSSIAN:
            forged = np.random.default_rng(task.seed).normal(0.0, scale, delta.shape)
        else:  # label flipping: the poisoned data is the attack
            forged = delta
        return ClientOutput(payload={"delta": forged.astype(np.float32)}, metrics={"hostile": 1})


register(HostileDevice())


# -- colluding: what each paper's attackers send, from the honest updates -----------------------
def alie(honest: np.ndarray, n: int, f: int) -> np.ndarray:
    """ "A Little Is Enough" (Baruch et al. 2019, Alg. 3): mean - z std per coordinate, with
    z = Phi^-1((n - s) / n) for s = floor(n / 2 + 1) - f, the most the median's side can
    be moved without the hostile values standing out."""
    s = math.floor(n / 2 + 1) - f
    z = statistics.NormalDist().inv_cdf((n - s) / n) if 0 < (n - s) / n < 1 else 0.0
    out: np.ndarray = honest.mean(axis=0) - z * honest.std(axis=0)
    return out


def ipm(honest: np.ndarray, epsilon: float) -> np.ndarray:
    """Inner-product manipulation (Xie et al. 2020): -epsilon x the honest mean."""
    out: np.ndarray = -epsilon * honest.mean(axis=0)
    return out


def _largest_gamma(fits: Callable[[float], bool], hi: float = 1.0, steps: int = 40) -> float:
    """The largest gamma >= 0 with fits(gamma), by doubling then bisection (0 if none)."""
    lo = 0.0
    while fits(hi) and hi < 1e12:
        lo, hi = hi, hi * 2
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def min_max(honest: np.ndarray) -> np.ndarray:
    """Min-max (Shejwalkar & Houmansadr 2021): mean + gamma p with p = -std, gamma as large
    as keeps the forged update's largest distance to an honest one within the largest
    distance between two honest ones."""
    mean, p = honest.mean(axis=0), -honest.std(axis=0)
    spread = math.sqrt(float(squared_distances(honest).max()))

    def fits(g: float) -> bool:
        return float(np.linalg.norm(honest - (mean + g * p), axis=1).max()) <= spread

    out: np.ndarray = mean + _largest_gamma(fits) * p
    return out


def min_sum(honest: np.ndarray) -> np.ndarray:
    """Min-sum (Shejwalkar & Houmansadr 2021): as min-max, bounding the sum of squared
    distances to the honest updates by the largest such sum of an honest one."""
    mean, p = honest.mean(axis=0), -honest.std(axis=0)
    bound = float(squared_distances(honest).sum(axis=1).max())

    def fits(g: float) -> bool:
        return float((np.linalg.norm(honest - (mean + g * p), axis=1) ** 2).sum()) <= bound

    out: np.ndarray = mean + _largest_gamma(fits) * p
    return out


def mimic(honest: np.ndarray) -> np.ndarray:
    """Mimic (Karimireddy et al. 2022): every attacker copies one honest update, the same
    one every round (here the honest client first by id), over-weighting one client's data."""
    out: np.ndarray = honest[0].copy()
    return out


@dataclass
class CollusionAttack(UpdateTransform):
    """In simulation: hostile results replaced by what the colluding attack computes from the
    honest results of the same round (the attackers' papers assume they know them)."""

    attack: AttackName
    fraction: float
    seed: int = 0
    scale: float | None = None
    _metrics: dict[str, Scalar] = field(default_factory=dict, init=False, repr=False)

    def client_apply(self, result: TrainResult, ctx: TransformContext) -> TrainResult:
        return result  # the hostile devices train honestly; the forging happens with the cohort

    def forge(self, honest: np.ndarray, n: int, f: int) -> np.ndarray:
        if self.attack is AttackName.ALIE:
            return alie(honest, n, f)
        if self.attack is AttackName.IPM:
            return ipm(honest, scale_of(self.attack, self.scale))
        if self.attack is AttackName.MIN_MAX:
            return min_max(honest)
        if self.attack is AttackName.MIN_SUM:
            return min_sum(honest)
        return mimic(honest)

    def server_apply(
        self, results: Sequence[TrainResult], ctx: TransformContext
    ) -> list[TrainResult | Failure]:
        bad = {r.client_id for r in results if hostile(r.client_id, self.fraction, self.seed)}
        honest = sorted((r for r in results if r.client_id not in bad), key=lambda r: r.client_id)
        if not bad or not honest:
            return list(results)
        stack = np.stack([np.asarray(r.payload["delta"], np.float64) for r in honest])
        forged = self.forge(stack, len(results), len(bad)).astype(np.float32)
        self._metrics = {"hostile_sum": len(bad)}  # the key the devices' own reports fold to
        return [
            replace(r, payload={**r.payload, "delta": forged.copy()}) if r.client_id in bad else r
            for r in results
        ]

    def round_metrics(self) -> dict[str, Scalar]:
        return dict(self._metrics)
