"""The config a run actually used: its TOML without the keys that did not apply to it.

``config.toml`` in a run folder holds every key with its default (so a resume rebuilds
the exact run), which makes a report list DP noise for a run without DP and Dirichlet
alphas for an IID split. Here each section says which of its keys the chosen dataset,
partition, strategy, backend and modes read; a feature that is off is one comment line.
The result still loads as a config: the keys left out take their defaults, which the
run never read.
"""

from __future__ import annotations

from typing import Any

import tomli_w

from shoal.config import DatasetName, PrivacyMode, RunConfig, SecAggMode, StrategyName, to_dict
from shoal.config.names import (
    AggregatorName,
    BackendName,
    CompressorName,
    ModelName,
    OptimizerName,
    Partition,
    PreAggregationName,
)

# The key each partition reads beyond num_clients (iid reads none).
_PARTITION_KEY = {
    Partition.DIRICHLET: "dirichlet_alpha",
    Partition.SHARDS: "shards_per_client",
    Partition.QUANTITY_SKEW: "quantity_sigma",
}
_ADAPTIVE = (StrategyName.FEDADAGRAD, StrategyName.FEDADAM, StrategyName.FEDYOGI)


def _top_unused(cfg: RunConfig, backend_used: str | None) -> set[str]:
    unused = set() if cfg.transforms else {"transforms"}
    if cfg.backend is not BackendName.RAY:
        unused |= {"ray_address", "ray_workers"}
    # "auto" picks the vectorized backend only where it pays off; summary.json names the one used.
    vectorized = cfg.backend is BackendName.VECTORIZED or (
        cfg.backend is BackendName.AUTO and backend_used in (None, "VectorizedBackend")
    )
    if not vectorized:
        unused.add("cohort_size")
    return unused


def _data_used(cfg: RunConfig) -> set[str]:
    d = cfg.data
    if d.dataset is DatasetName.SYNTHETIC:  # natural clients: no partition, its own test split
        return {"dataset", "num_clients", "synthetic_iid"} | (
            set() if d.synthetic_iid else {"synthetic_alpha", "synthetic_beta"}
        )
    if d.dataset is DatasetName.SHAKESPEARE:  # one client per role, the largest num_clients kept
        return {"dataset", "num_clients"}
    used = {"dataset", "partition", "num_clients", "holdout_fraction"}
    if d.partition in _PARTITION_KEY:
        used.add(_PARTITION_KEY[d.partition])
    own = not isinstance(d.dataset, DatasetName)  # the user's loader, which may read path
    if own or d.dataset in (DatasetName.FASHION_MNIST, DatasetName.CSV):
        used.add("path")
    if d.dataset is DatasetName.CSV:
        used.add("label_column")
    if d.dataset is not DatasetName.FASHION_MNIST:  # Fashion-MNIST ships its own test split
        used.add("test_fraction")
    return used


def _robust_unused(cfg: RunConfig) -> set[str]:
    s = cfg.strategy
    unused = set()
    if s.aggregator is AggregatorName.MEAN and PreAggregationName.NNM not in s.pre_aggregation:
        unused.add("attackers")
    if s.aggregator is not AggregatorName.CENTERED_CLIPPING:
        unused.add("cc_tau")
    if PreAggregationName.CLIP not in s.pre_aggregation:
        unused.add("clip_threshold")
    if PreAggregationName.BUCKETING not in s.pre_aggregation:
        unused.add("bucket_size")
    return unused


def _strategy_unused(cfg: RunConfig) -> set[str]:
    s = cfg.strategy
    unused = {"clients_per_round"} if s.fraction is not None else set()
    if s.straggler_fraction == 0:
        unused.add("drop_stragglers")
    unused |= _robust_unused(cfg)
    if not isinstance(s.name, StrategyName):  # the user's strategy: no telling which keys it reads
        return unused
    if s.name is not StrategyName.FEDAVGM:
        unused.add("server_momentum")
    if s.name is not StrategyName.FEDPROX:
        unused.add("proximal_mu")
    if s.name is not StrategyName.FEDDYN:
        unused.add("feddyn_alpha")
    if s.name not in _ADAPTIVE:
        unused |= {"beta1", "beta2", "tau"}
    elif s.name is StrategyName.FEDADAGRAD:  # Adagrad sums squares; no second-moment decay
        unused.add("beta2")
    return unused


def _model_reads_hidden(name: object) -> bool:
    # The user's own model (an import path) may accept hidden; of the built-ins, two do.
    return not isinstance(name, ModelName) or name in (ModelName.MLP, ModelName.CHAR_LSTM)


def _trainer_unused(cfg: RunConfig) -> set[str]:
    t = cfg.trainer
    unused = set() if t.optimizer is OptimizerName.SGD else {"momentum"}
    if t.dp_sgd_noise_multiplier is None:
        unused |= {"dp_sgd_max_grad_norm", "dp_sgd_delta", "dp_sgd_noise"}
    return unused


def _privacy_unused(cfg: RunConfig) -> set[str]:
    p = cfg.privacy
    if p.mode is PrivacyMode.LOCAL:  # each device clips and noises; a fixed RDP ledger per client
        return {
            "adaptive_clipping",
            "target_quantile",
            "clip_lr",
            "clip_count_stddev",
            "target_epsilon",
            "accountant",
            "min_clients",
        }
    if p.mode is PrivacyMode.DISTRIBUTED:  # fixed clipping on the device, the Skellam ledger's own RDP
        return {"adaptive_clipping", "target_quantile", "clip_lr", "clip_count_stddev", "accountant"}
    if not p.adaptive_clipping:
        return {"target_quantile", "clip_lr", "clip_count_stddev", "min_clients"}
    return {"min_clients"}


# The keys each uplink codec reads beyond uplink, downlink and error_feedback.
_CODEC_KEYS = {
    CompressorName.QUANTIZE: {"bits", "block", "stochastic"},
    CompressorName.TOP_K: {"keep_fraction", "values"},
    CompressorName.RANDOM_MASK: {"keep_fraction", "values"},
    CompressorName.SIGN: {"block"},
    CompressorName.POWERSGD: {"rank"},
}


def _compression_used(cfg: RunConfig) -> set[str]:
    c = cfg.compression
    if c.uplink is CompressorName.NONE:
        return {"uplink", "downlink"}
    used = {"uplink", "downlink", "error_feedback"} | _CODEC_KEYS.get(c.uplink, set())
    if c.values in (CompressorName.QUANTIZE, CompressorName.SIGN):  # how the kept values travel
        used |= _CODEC_KEYS[c.values]
    return used


def applicable(cfg: RunConfig, backend_used: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The config as a dict of only the keys this run read, and the features it left off.

    ``backend_used`` is the backend class summary.json names, which resolves ``"auto"``.
    """
    full = to_dict(cfg)
    off = [
        name
        for name, is_off in (
            ("privacy", cfg.privacy.mode is PrivacyMode.NONE),
            ("secagg", cfg.secagg.mode is SecAggMode.NONE),
            ("he", not cfg.he.enabled),
            ("compression", {cfg.compression.uplink, cfg.compression.downlink} == {CompressorName.NONE}),
        )
        if is_off
    ]
    unused: dict[str, set[str]] = {
        "data": set(full["data"]) - _data_used(cfg),
        "model": set() if _model_reads_hidden(cfg.model.name) else {"hidden"},
        "strategy": _strategy_unused(cfg),
        "trainer": _trainer_unused(cfg),
        "eval": set() if cfg.eval.federated_eval_every else {"federated_eval_clients"},
        "privacy": _privacy_unused(cfg),
        "secagg": set() if cfg.secagg.mode is SecAggMode.SECAGG_PLUS else {"degree"},
        "compression": set(full["compression"]) - _compression_used(cfg),
    }
    top = _top_unused(cfg, backend_used)
    shown: dict[str, Any] = {}
    for key, value in full.items():
        if key in off or key in top:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in unused.get(key, set())}
        shown[key] = value
    return shown, off


def config_text(cfg: RunConfig, backend_used: str | None = None) -> str:
    """TOML of :func:`applicable`, each feature that is off a comment line (``# privacy: off``)."""
    shown, off = applicable(cfg, backend_used)
    head = "".join(f"# {name}: off\n" for name in off)
    return head + ("\n" if head else "") + tomli_w.dumps(shown)
