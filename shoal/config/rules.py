"""Rules that span sections: combinations of settings that would run but be wrong.

Each section checks its own values (``schema.py``); these checks need two or more
sections at once (central DP with SCAFFOLD, secure aggregation with a norm bound, ...).
Every refusal says what to change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.apps import label
from shoal.config.names import (
    BackendName,
    CompressorName,
    PersonalizationName,
    PrivacyMode,
    SecAggMode,
    StrategyName,
)
from shoal.errors import ConfigError

if TYPE_CHECKING:
    from shoal.config.schema import RunConfig


def check(cfg: RunConfig) -> None:
    """Every rule that spans sections; RunConfig runs it on construction."""
    if cfg.privacy.mode is PrivacyMode.CENTRAL:
        # Central DP merges the cohort into one noised average before the strategy sees it.
        if cfg.strategy.name in (StrategyName.SCAFFOLD, StrategyName.FEDNOVA):
            raise ConfigError(
                f"privacy.mode = 'central' noises one averaged update; {label(cfg.strategy.name)} needs "
                "each client's own vectors: use fedavg, fedprox, fedavgm or an adaptive optimizer"
            )
        if cfg.strategy.drop_stragglers:
            raise ConfigError("privacy.mode = 'central' aggregates every result; set drop_stragglers = false")
        if cfg.strategy.robust_aggregator() is not None:
            raise ConfigError(
                "privacy.mode = 'central' merges the cohort into one noised average before the strategy "
                "sees it, so a robust aggregator has nothing to choose from: set strategy.aggregator = "
                "'mean' and no pre_aggregation (central DP's clipping already bounds each client's pull)"
            )
    if cfg.privacy.mode is PrivacyMode.DISTRIBUTED:
        _check_distributed(cfg)
    _check_client_algorithm(cfg)
    _check_attack(cfg)
    _check_personalization(cfg)
    if cfg.split.protocol is not None:
        _check_split(cfg)
    if cfg.continual.drift_rounds and max(cfg.continual.drift_rounds) > cfg.rounds:
        raise ConfigError(
            f"continual.drift_rounds {list(cfg.continual.drift_rounds)} reach past the run's {cfg.rounds} "
            "rounds: the data would never change; lower them or raise rounds"
        )
    if cfg.continual.drift is not None and cfg.backend is BackendName.RAY:
        raise ConfigError(
            'continual.drift changes the clients\' data every round, but backend = "ray" ships each '
            'actor its clients\' data once: use backend = "inprocess" or "vectorized"'
        )
    if cfg.model.init == "pretrain" and cfg.model.pretrain_dataset == cfg.data.dataset:
        raise ConfigError(
            f"model.pretrain_dataset is the devices' own dataset ({label(cfg.data.dataset)}): the server "
            "would train on the data federated learning keeps on the devices. Pretrain on public "
            "proxy data they do not hold (another dataset, or your loader of it)"
        )
    if cfg.fleet is not None:
        _check_fleet(cfg)
    if cfg.strategy.name is StrategyName.FEDBUFF:
        _check_fedbuff(cfg)
    if cfg.secagg.mode is not SecAggMode.NONE and cfg.he.enabled:
        raise ConfigError("choose one of secure aggregation ([secagg]) and homomorphic aggregation ([he])")
    if cfg.secagg.mode is not SecAggMode.NONE or cfg.he.enabled:
        _check_hidden_updates(cfg)


def _check_split(cfg: RunConfig) -> None:
    """Split learning runs its own protocol: FedAvg's update path does not apply to it."""
    unused = [
        name
        for name, on in (
            ("[privacy]", cfg.privacy.mode is not PrivacyMode.NONE),
            ("[secagg]", cfg.secagg.mode is not SecAggMode.NONE),
            ("[he]", cfg.he.enabled),
            ("[compression]", cfg.compression.uplink is not CompressorName.NONE),
            ("[personalization]", cfg.personalization.method is not None),
            ("[continual]", cfg.continual.drift is not None),
            ("fleet", cfg.fleet is not None),
            ("trainer.attack", cfg.trainer.attack is not None),
            ("strategy.aggregator", cfg.strategy.robust_aggregator() is not None),
            ("model.init", cfg.model.init != "random"),
        )
        if on
    ]
    if unused:
        raise ConfigError(
            f"split.protocol = {cfg.split.protocol!s} exchanges activations and gradients, not updates: "
            f"{', '.join(unused)} do not apply to it; drop them or drop [split]"
        )
    t = cfg.trainer
    if t.optimizer.value != "sgd" or t.momentum or t.weight_decay:
        raise ConfigError(
            "split learning trains both sides with plain SGD (no state to relay or average): set "
            "trainer.optimizer = 'sgd', momentum = 0 and weight_decay = 0"
        )


def _check_personalization(cfg: RunConfig) -> None:
    """A personal model is scored only by federated evaluation, on the clients' holdouts."""
    method = cfg.personalization.method
    if method is None:
        return
    if cfg.eval.federated_eval_every == 0:
        raise ConfigError(
            f"personalization.method = {method.value!r} keeps a model on each device, which only federated "
            "evaluation scores: set eval.federated_eval_every (e.g. to rounds) and data.holdout_fraction > 0"
        )
    name = cfg.strategy.name
    if name in (StrategyName.SCAFFOLD, StrategyName.FEDDYN) and method.layered:
        raise ConfigError(
            f"{label(name)}'s control state assumes every coordinate is shared, but "
            f"personalization.method = {method.value!r} keeps some on the device: use fedavg or fedprox"
        )
    if (
        name in (StrategyName.FEDPROX, StrategyName.SCAFFOLD, StrategyName.FEDDYN)
        and method is PersonalizationName.APFL
    ):
        raise ConfigError(
            f"APFL's local loop takes plain SGD steps on the shared model, without {label(name)}'s "
            "gradient term: use strategy.name = 'fedavg' (or another server optimizer)"
        )


def _check_distributed(cfg: RunConfig) -> None:
    """Distributed DP's noise lives in secure aggregation's ring: nothing else sums it."""
    if cfg.secagg.mode is SecAggMode.NONE:
        raise ConfigError(
            "privacy.mode = 'distributed' adds each device's share of the noise inside secure "
            "aggregation's ring, so only the noised sum is ever unmasked: set secagg.mode = 'secagg' "
            "or 'secagg+' (or use privacy.mode = 'local' without it)"
        )
    wanted = cfg.strategy.clients_per_round
    if cfg.strategy.fraction is None and wanted < cfg.privacy.min_clients:
        raise ConfigError(
            f"privacy.min_clients = {cfg.privacy.min_clients} devices' noise must be in every sum, but a "
            f"round picks {wanted}: lower privacy.min_clients or raise strategy.clients_per_round"
        )


def _check_attack(cfg: RunConfig) -> None:
    """Colluding attacks are simulated on the decoded cohort, which hiding or merging removes."""
    attack = cfg.trainer.attack
    if attack is None or not attack.colluding:
        return
    if cfg.secagg.mode is not SecAggMode.NONE or cfg.he.enabled or cfg.privacy.mode is PrivacyMode.CENTRAL:
        raise ConfigError(
            f"trainer.attack = {attack.value!r} is simulated on the server's decoded updates, which secure "
            "or homomorphic aggregation and central DP never show it: evaluate it without them, or use an "
            "attack that runs on the device (sign-flip, gaussian, scaling)"
        )


def _check_fleet(cfg: RunConfig) -> None:
    """What a simulated fleet does not run yet, or makes redundant."""
    if cfg.he.enabled:
        raise ConfigError(
            "a fleet drops devices mid-round, which homomorphic aggregation's key authority "
            "does not model yet: run it without fleet"
        )
    if cfg.strategy.straggler_fraction > 0:
        raise ConfigError(
            "with a fleet, slow devices come from their profiles: set strategy.straggler_fraction = 0 "
            "and use strategy.deadline_s (and over_selection) to decide what a late result costs"
        )


def _check_fedbuff(cfg: RunConfig) -> None:
    """FedBuff aggregates results in the order they arrive, which needs a clock; and what
    is proved for synchronous cohorts is not claimed for it."""
    if cfg.secagg.mode is not SecAggMode.NONE or cfg.he.enabled:
        raise ConfigError("fedbuff aggregates results as they come; secure aggregation needs a fixed cohort")
    if cfg.privacy.mode is not PrivacyMode.NONE:
        raise ConfigError(
            "fedbuff with differential privacy: the accountants here compose synchronous "
            "rounds of sampled cohorts, not asynchronous participation; use fedavg"
        )
    if cfg.strategy.over_selection:
        raise ConfigError("fedbuff keeps concurrency devices busy; over_selection is for synchronous rounds")


def _check_client_algorithm(cfg: RunConfig) -> None:
    """Settings a client algorithm's update rule is not derived for, refused up front."""
    name, t = cfg.strategy.name, cfg.trainer
    if name is StrategyName.SCAFFOLD and (t.optimizer.value != "sgd" or t.momentum):
        raise ConfigError(
            "scaffold's control update (option II) assumes plain local SGD: "
            "set trainer.optimizer = 'sgd' and trainer.momentum = 0"
        )
    if name is StrategyName.FEDNOVA and (t.optimizer.value != "sgd" or t.weight_decay):
        raise ConfigError(
            "fednova normalizes local SGD (with or without momentum): "
            "set trainer.optimizer = 'sgd' and trainer.weight_decay = 0"
        )


def _check_hidden_updates(cfg: RunConfig) -> None:
    """Secure and homomorphic aggregation show the server only the sum."""
    share = 1 / (1 + cfg.strategy.over_selection)  # of the picked devices, what a round counts
    if cfg.secagg.mode is not SecAggMode.NONE and share <= cfg.secagg.threshold:
        raise ConfigError(
            f"over-selection counts {share:.0%} of the picked devices, but secure aggregation needs "
            f"more than its threshold ({cfg.secagg.threshold:.0%}) of them to unmask: set "
            f"strategy.over_selection below {1 / cfg.secagg.threshold - 1:.2f}"
        )
    if cfg.secagg.mode is not SecAggMode.NONE and cfg.backend is BackendName.RAY:
        raise ConfigError(
            "secure aggregation runs with the inprocess and vectorized backends, not ray (the "
            "devices' protocol halves live in this process); use backend = 'inprocess'"
        )
    if cfg.privacy.mode is PrivacyMode.CENTRAL:
        raise ConfigError(
            "secure and homomorphic aggregation hide each update, so the server cannot clip them for "
            "central DP; use privacy.mode = 'local' (each device clips and noises)"
        )
    if cfg.strategy.robust_aggregator() is not None:
        raise ConfigError(
            "secure and homomorphic aggregation show the server only the sum, and a robust aggregator "
            f"({cfg.strategy.aggregator.value}) needs each update: set strategy.aggregator = 'mean' and "
            "no pre_aggregation, and bound what one device can do on the device (privacy.mode = "
            "'local' or 'distributed' clips every update before it is masked). Proving a bounded "
            "norm in zero knowledge is out of scope"
        )
    if cfg.compression.uplink is not CompressorName.NONE:
        raise ConfigError(
            f"compression.uplink = {cfg.compression.uplink.value!r} gives each update its own scale or "
            "indices, which a sum of masked or encrypted updates cannot decode; secure aggregation "
            "compresses in its own ring instead: set compression.uplink = 'none'"
        )
    if cfg.strategy.name in (StrategyName.SCAFFOLD, StrategyName.FEDNOVA) or cfg.strategy.drop_stragglers:
        raise ConfigError(
            "secure and homomorphic aggregation reveal only the sum; "
            f"{label(cfg.strategy.name)} with these settings needs each client's own vectors"
        )
