"""Privacy accounting with Google's ``dp-accounting``: epsilon before, during and after a run.

Guarantees are at the client (user) level: neighbouring runs differ in one client's whole
dataset. What the accountant composes each round must be the sampling the engine really
performed, so the strategy describes it (:class:`Sampling`) and the accountant refuses
any change of kind mid-run:

- **Poisson** (each available client joins independently with probability q): the
  subsampled Gaussian under add/remove-one adjacency, by RDP or PLD accounting
  (``PoissonSampledDpEvent``); the tight, standard analysis of DP-FedAvg.
- **Fixed size** (m of N without replacement, FedAvg's default): only the RDP accountant
  supports it, and only under replace-one adjacency (``SampledWithoutReplacementDpEvent``).
  Replacing one client moves a sum of updates clipped to C by up to 2C, so the Gaussian
  event's noise multiplier is ``z / 2``: fixed-size sampling costs more epsilon at the
  same noise. Prefer Poisson sampling for DP runs.
"""

from __future__ import annotations

import math
from typing import Any

import dp_accounting
import numpy as np
from absl import logging
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from shoal.config.names import AccountantName
from shoal.errors import CheckpointError, ConfigError
from shoal.sampling import Sampling, SamplingKind

# dp-accounting logs a warning for every RDP order it cannot evaluate at small noise; the
# orders are simply skipped, so the result stays valid: keep those warnings out of the way.
logging.set_verbosity(logging.ERROR)


def round_event(sampling: Sampling, noise_multiplier: float) -> dp_event.DpEvent:
    """One round of the subsampled Gaussian mechanism on client-clipped updates."""
    if noise_multiplier <= 0:
        raise ConfigError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    if sampling.kind is SamplingKind.POISSON:
        return dp_event.PoissonSampledDpEvent(sampling.rate, dp_event.GaussianDpEvent(noise_multiplier))
    return dp_event.SampledWithoutReplacementDpEvent(
        sampling.population, sampling.size, dp_event.GaussianDpEvent(noise_multiplier / 2)
    )


def _accountant(kind: SamplingKind, name: AccountantName) -> dp_accounting.PrivacyAccountant:
    if kind is SamplingKind.FIXED:
        if name is AccountantName.PLD:
            raise ConfigError(
                "the PLD accountant supports only Poisson sampling; use accountant = 'rdp' "
                "or sample clients with strategy.sampling = 'poisson'"
            )
        return rdp_privacy_accountant.RdpAccountant(
            neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
        )
    if name is AccountantName.PLD:
        return pld_privacy_accountant.PLDAccountant()
    return rdp_privacy_accountant.RdpAccountant()


def epsilon(
    sampling: Sampling,
    noise_multiplier: float,
    rounds: int,
    delta: float,
    accountant: AccountantName | str = AccountantName.RDP,
) -> float:
    """Epsilon at ``delta`` after ``rounds`` identical rounds."""
    _check_delta(delta)
    acc = _accountant(sampling.kind, AccountantName(accountant))
    acc.compose(round_event(sampling, noise_multiplier), rounds)
    return float(acc.get_epsilon(delta))


def calibrate_noise(
    sampling: Sampling,
    rounds: int,
    target_epsilon: float,
    delta: float,
    accountant: AccountantName | str = AccountantName.RDP,
) -> float:
    """The smallest noise multiplier whose epsilon after ``rounds`` is at most the target."""
    _check_delta(delta)
    if target_epsilon <= 0:
        raise ConfigError(f"target_epsilon must be > 0, got {target_epsilon}")
    name = AccountantName(accountant)
    if epsilon(sampling, _MIN_NOISE, rounds, delta, name) <= target_epsilon:
        return _MIN_NOISE  # any noise the search considers meets the target
    return float(
        dp_accounting.calibrate_dp_mechanism(
            lambda: _accountant(sampling.kind, name),
            lambda z: dp_event.SelfComposedDpEvent(round_event(sampling, z), rounds),
            target_epsilon,
            delta,
            dp_accounting.LowerEndpointAndGuess(_MIN_NOISE, 1.0),
            tol=1e-4,
        )
    )


# Smaller multipliers make the PLD accountant's grids huge (tens of GB) and buy nothing useful:
# at z < 0.3 a round alone costs epsilon in the tens.
_MIN_NOISE = 0.3


def _check_delta(delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must be in (0, 1), got {delta}; 1/N^1.1 for N clients is customary")


def over_budget(after: float, target: float | None, delta: float, rounds: int) -> str | None:
    """Why one more round must not run: it would take epsilon past ``target`` (None: it may)."""
    if target is None or after <= target:
        return None
    return (
        f"privacy budget: one more round would bring epsilon to {after:.3f} > target "
        f"{target:g} (delta {delta:g}) after {rounds} rounds"
    )


class PrivacyLedger:
    """The rounds a run has released, composed as they happen, and epsilon so far.

    Its state is the list of (sampling, count) it composed, so a resumed run replays it
    exactly; a round whose sampling kind differs from the run's is refused.
    """

    def __init__(self, noise_multiplier: float, delta: float, accountant: AccountantName | str) -> None:
        _check_delta(delta)
        self.noise_multiplier, self.delta = noise_multiplier, delta
        self.accountant = AccountantName(accountant)
        self.rounds: list[tuple[Sampling, int]] = []
        self._curves: dict[Sampling, np.ndarray] = {}

    @property
    def kind(self) -> SamplingKind | None:
        return self.rounds[0][0].kind if self.rounds else None

    def _check(self, sampling: Sampling) -> None:
        if self.kind is not None and sampling.kind is not self.kind:
            raise ConfigError(
                f"the run's client sampling changed from {self.kind.value} to {sampling.kind.value}; "
                "the privacy accounting covers one kind per run"
            )
        _accountant(sampling.kind, self.accountant)  # refuses PLD with fixed-size sampling

    def epsilon(self, extra: Sampling | None = None) -> float:
        """Epsilon so far, or after one more round sampled as ``extra``."""
        rounds = list(self.rounds) + ([(extra, 1)] if extra is not None else [])
        if not rounds:
            return 0.0
        if self.accountant is AccountantName.RDP:
            # RDP adds up over rounds: one curve per distinct sampling, computed once (a
            # sampled-without-replacement curve takes ~0.3 s), then summed.
            orders = rdp_privacy_accountant.DEFAULT_RDP_ORDERS
            total = sum(count * self._rdp_curve(sampling) for sampling, count in rounds)
            value = float(rdp_privacy_accountant.compute_epsilon(orders, total, self.delta)[0])
        else:
            acc = _accountant(rounds[0][0].kind, self.accountant)
            for sampling, count in rounds:
                acc.compose(round_event(sampling, self.noise_multiplier), count)
            value = float(acc.get_epsilon(self.delta))
        return value if math.isfinite(value) else float("inf")

    def _rdp_curve(self, sampling: Sampling) -> np.ndarray:
        curve = self._curves.get(sampling)
        if curve is None:
            acc = _accountant(sampling.kind, AccountantName.RDP)
            acc.compose(round_event(sampling, self.noise_multiplier))
            curve = self._curves[sampling] = np.asarray(acc.rdp, dtype=np.float64)
        return curve

    def record(self, sampling: Sampling) -> None:
        self._check(sampling)
        if self.rounds and self.rounds[-1][0] == sampling:
            self.rounds[-1] = (sampling, self.rounds[-1][1] + 1)
        else:
            self.rounds.append((sampling, 1))

    @property
    def rounds_released(self) -> int:
        return sum(count for _, count in self.rounds)

    def state_dict(self) -> dict[str, Any]:
        return {
            "noise_multiplier": self.noise_multiplier,
            "delta": self.delta,
            "accountant": self.accountant.value,
            "rounds": [
                {"kind": s.kind.value, "population": s.population, "rate": s.rate, "size": s.size, "count": c}
                for s, c in self.rounds
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the composed rounds; refuse a ledger made with another mechanism (after
        Opacus): composing on under a different noise multiplier, delta or accountant
        would report an epsilon that holds for neither run."""
        saved = {k: state[k] for k in ("noise_multiplier", "delta", "accountant") if k in state}
        if len(saved) < 3 and state.get("rounds"):
            raise CheckpointError(
                "this checkpoint's privacy ledger does not say which noise multiplier, delta and "
                "accountant it composed; it cannot be resumed safely: start a fresh run"
            )
        mine = {
            "noise_multiplier": self.noise_multiplier,
            "delta": self.delta,
            "accountant": self.accountant.value,
        }
        for key, value in saved.items():
            if value != mine[key]:
                raise CheckpointError(
                    f"the checkpoint's privacy ledger used {key} = {value!r}, this run {mine[key]!r}; "
                    f"resume with privacy.{key} = {value!r}, or start a fresh run"
                )
        self.rounds = [
            (Sampling(r["kind"], int(r["population"]), float(r["rate"]), int(r["size"])), int(r["count"]))
            for r in state.get("rounds", [])
        ]
