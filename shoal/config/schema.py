"""The config schema: one frozen dataclass per section, each checking its own values.

Cross-section rules live in ``rules.py``; the TOML file and command-line flags in
``codec.py``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from shoal import apps
from shoal.apps import Ref, label
from shoal.client.hparams import Personalization, TorchTrainer
from shoal.config import rules
from shoal.config.names import (
    AccountantName,
    AggregatorName,
    BackendName,
    CompressorName,
    DatasetName,
    ModelName,
    Partition,
    PreAggregationName,
    PrivacyMode,
    SecAggMode,
    SplitProtocol,
    StrategyName,
)
from shoal.continual.config import ContinualConfig
from shoal.errors import ConfigError
from shoal.rng import NoiseName
from shoal.sampling import SamplingKind
from shoal.scores import check_metric

# What the sections build (strategies, DP, secure and homomorphic aggregation) is imported
# where it is built, so that reading a config, and every error it can raise about keys,
# types and names, costs no torch or privacy accountant.
if TYPE_CHECKING:
    from shoal.he.ckks import CKKSParams, HomomorphicAggregation
    from shoal.privacy.central import CentralDP
    from shoal.privacy.distributed import DistributedDP
    from shoal.privacy.local import LocalDP
    from shoal.runtime.validation import ResultLimits
    from shoal.secagg.encoding import RingEncoder
    from shoal.secagg.transform import SecureAggregation
    from shoal.strategy.base import Strategy
    from shoal.strategy.preagg import RobustPipeline
    from shoal.strategy.server_opt import ServerOptimizer
    from shoal.transforms.compress import Compressor

E = TypeVar("E", bound=enum.Enum)


def named(key: str, value: Any, names: type[E]) -> E | Ref:
    """A built-in name (an enum member) or an import path to the user's own."""
    if isinstance(value, names):
        return value
    if isinstance(value, str) and ":" in value:
        return Ref.parse(key, value)
    try:
        return names(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in names)
        raise ConfigError(
            f"{key}: {value!r} is not allowed; choose one of {allowed}, "
            "or an import path to your own: 'package.module:attribute'"
        ) from None


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")


def _in_unit(key: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{key} must be in [0, 1), got {value}")


@dataclass(frozen=True)
class DataConfig:
    dataset: DatasetName | Ref = DatasetName.MNIST_SUBSET  # or your loader: "package.module:load"
    path: str | None = None  # the Fashion-MNIST folder or the CSV file
    label_column: str = "label"  # CSV only
    test_fraction: float = 0.2  # held out centrally when the dataset has no test split
    partition: Partition = Partition.IID
    num_clients: int = 100
    dirichlet_alpha: float = 0.5  # partition = "dirichlet": smaller is more skewed
    shards_per_client: int = 2  # partition = "shards": 2 is McMahan et al.'s pathological split
    quantity_sigma: float = 1.0  # partition = "quantity-skew": log-normal spread of client sizes
    holdout_fraction: float = 0.0  # per-client share held out for federated evaluation
    synthetic_alpha: float = 0.0  # dataset = "synthetic": how much the devices' models differ
    synthetic_beta: float = 0.0  # dataset = "synthetic": how much the devices' inputs differ
    synthetic_iid: bool = False  # dataset = "synthetic": one shared model and input law
    # A deployment (devices with their own files) builds the model before any data arrives,
    # from these; a simulation takes them from the data and, when they are set, checks them.
    input_shape: tuple[int, ...] | None = None  # one example's shape, e.g. [8] or [1, 28, 28]
    num_classes: int | None = None  # None with classes set: len(classes)
    classes: tuple[str, ...] = ()  # label names in index order (CSV labels, image folder names)
    test_path: str | None = None  # a deployment: the server's own test set, read as a device reads its data

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", named("data.dataset", self.dataset, DatasetName))
        if self.num_classes is None and self.classes:
            object.__setattr__(self, "num_classes", len(self.classes))
        if self.num_classes is not None:
            _at_least("data.num_classes", self.num_classes, 1)
            if self.classes and len(self.classes) != self.num_classes:
                raise ConfigError(
                    f"data.classes names {len(self.classes)} classes but data.num_classes is "
                    f"{self.num_classes}; drop num_classes (it follows from classes) or make them agree"
                )
        if self.input_shape is not None and (not self.input_shape or min(self.input_shape) < 1):
            raise ConfigError(f"data.input_shape must be a list of sizes >= 1, got {list(self.input_shape)}")
        object.__setattr__(self, "partition", Partition(self.partition))
        _at_least("data.num_clients", self.num_clients, 1)
        _at_least("data.shards_per_client", self.shards_per_client, 1)
        _in_unit("data.test_fraction", self.test_fraction)
        _in_unit("data.holdout_fraction", self.holdout_fraction)
        if not self.dirichlet_alpha > 0:
            raise ConfigError(f"data.dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        if self.synthetic_alpha < 0 or self.synthetic_beta < 0:
            raise ConfigError("data.synthetic_alpha and data.synthetic_beta must be >= 0")
        if self.quantity_sigma < 0:
            raise ConfigError(f"data.quantity_sigma must be >= 0, got {self.quantity_sigma}")
        if self.dataset is DatasetName.CSV and not self.path:
            raise ConfigError('data.dataset = "csv" needs data.path, the CSV file to read')


@dataclass(frozen=True)
class ModelConfig:
    name: ModelName | Ref = ModelName.MCMAHAN_CNN  # or your model: "package.module:Net"
    hidden: tuple[int, ...] = (64,)  # mlp: hidden layer widths; char_lstm: one equal width per LSTM layer
    # Where round 1 starts: "random" (the seed's initialization); "pretrain", trained first on
    # the server's public proxy data (pretrain_dataset), against the cold start; or the path of
    # a .safetensors file of this model's weights (yours, or a run's model.safetensors)
    init: str = "random"
    pretrain_dataset: DatasetName | Ref | None = None  # public data the devices do not hold
    pretrain_path: str | None = None  # its folder or file, where the dataset needs one
    pretrain_epochs: int = 5
    pretrain_examples: int | None = None  # at most this many proxy examples (None: all)
    pretrain_lr: float | None = None  # None: trainer.lr

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", named("model.name", self.name, ModelName))
        if self.init not in ("random", "pretrain") and not self.init.endswith(".safetensors"):
            raise ConfigError(
                "model.init must be 'random', 'pretrain' or the path of a .safetensors file, "
                f"got {self.init!r}"
            )
        if self.pretrain_dataset is not None:
            object.__setattr__(
                self, "pretrain_dataset", named("model.pretrain_dataset", self.pretrain_dataset, DatasetName)
            )
        if self.init == "pretrain" and self.pretrain_dataset is None:
            raise ConfigError(
                'model.init = "pretrain" trains on public proxy data first: set model.pretrain_dataset '
                '(e.g. "mnist-subset", or your loader "package.module:load")'
            )
        if self.init != "pretrain" and self.pretrain_dataset is not None:
            raise ConfigError('model.pretrain_dataset is read only with model.init = "pretrain"')
        _at_least("model.pretrain_epochs", self.pretrain_epochs, 1)
        if self.pretrain_examples is not None:
            _at_least("model.pretrain_examples", self.pretrain_examples, 1)
        if self.pretrain_lr is not None and not self.pretrain_lr > 0:
            raise ConfigError(f"model.pretrain_lr must be > 0, got {self.pretrain_lr}")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"model.hidden widths must be >= 1, got {list(self.hidden)}")
        if self.name is ModelName.CHAR_LSTM and (not self.hidden or len(set(self.hidden)) != 1):
            widths = list(self.hidden)
            raise ConfigError(f"char_lstm needs equal LSTM widths, e.g. model.hidden = [128]; got {widths}")


@dataclass(frozen=True)
class StrategyConfig:
    name: StrategyName | Ref = StrategyName.FEDAVG  # or your strategy: "package.module:MyStrategy"
    clients_per_round: int = 10
    fraction: float | None = None  # C: when set, overrides clients_per_round
    min_clients: int = 1  # fewer results abandon the round, leaving the model unchanged
    sampling: SamplingKind = SamplingKind.FIXED  # "poisson": each client joins with probability q (for DP)
    server_lr: float | None = None  # None: 1.0 for fedavg/fedavgm/scaffold, 0.01 for the adaptive ones
    server_momentum: float = 0.9  # fedavgm
    proximal_mu: float = 0.01  # fedprox: weight of mu/2 ||w - w_global||^2 in the local loss
    straggler_fraction: float = 0.0  # share of clients that run only 1..local_epochs epochs
    drop_stragglers: bool = False  # discard stragglers' partial work (FedAvg in Li et al. 2020)
    beta1: float = 0.9  # fedadam/fedyogi/fedadagrad: first-moment decay
    beta2: float = 0.99  # fedadam/fedyogi: second-moment decay
    tau: float = 1e-3  # fedadam/fedyogi/fedadagrad: adaptivity floor
    feddyn_alpha: float = 0.01  # feddyn: weight of the dynamic regularizer (the paper's alpha)
    buffer_size: int = 10  # fedbuff: results per server step (K)
    concurrency: int | None = None  # fedbuff: devices training at once (None: clients_per_round)
    staleness_exponent: float = 0.5  # fedbuff: a result tau steps old weighs (1 + tau)^-a
    # What one client may claim. None: the largest client's training set in this config's
    # data (no honest client is refused); results above it are rejected, never clamped.
    max_num_examples: int | None = None
    max_update_norm: float | None = None  # refuse updates longer than this (L2); None: no bound
    # Rounds on a fleet (virtual time) or over the network: pick this share more devices
    # than a round needs and commit on the first answers (Bonawitz et al. 2019 use 0.3) ...
    over_selection: float = 0.0
    deadline_s: float | None = None  # ... and drop results later than this (None: wait for all)
    # Against hostile clients: a robust rule in place of the average, built for `attackers`
    # of them a round, after the pre_aggregation steps in order (clip | nnm | bucketing).
    aggregator: AggregatorName = AggregatorName.MEAN
    attackers: int = 0  # f: hostile clients a round the aggregator must tolerate
    pre_aggregation: tuple[PreAggregationName, ...] = ()
    clip_threshold: float = 1.0  # pre_aggregation "clip": the L2 norm every update is cut to
    bucket_size: int = 2  # pre_aggregation "bucketing": updates averaged per bucket
    cc_tau: float = 1.0  # centered-clipping: the radius updates are clipped to around the centre

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", named("strategy.name", self.name, StrategyName))
        object.__setattr__(self, "aggregator", AggregatorName(self.aggregator))
        object.__setattr__(
            self, "pre_aggregation", tuple(PreAggregationName(p) for p in self.pre_aggregation)
        )
        self._check_robust()
        if not 0.0 <= self.over_selection <= 1.0:
            why = f"a share of the cohort in [0, 1], got {self.over_selection}"
            raise ConfigError(f"strategy.over_selection is {why}")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ConfigError(f"strategy.deadline_s must be > 0 seconds, got {self.deadline_s}")
        if not isinstance(self.name, Ref):  # user code is imported when the run is built, not here
            self.build()  # the constructors check every value
        self.limits([1])

    def limits(self, sizes: Iterable[int] | None) -> ResultLimits:
        """The claims a client may make, for a population of these training-set sizes
        (None: a deployment, where the server cannot see them)."""
        cap = self.max_num_examples
        if cap is None and sizes is None:
            raise ConfigError(
                "a deployed server never sees the devices' data, so it cannot tell how many "
                "examples an honest device holds: set strategy.max_num_examples (the most one "
                "device may claim; FedAvg weights results by it), e.g. 10000"
            )
        if cap is None:
            cap = max(max(sizes or (), default=1), 1)
        from shoal.runtime.validation import ResultLimits

        return ResultLimits(max_num_examples=cap, max_update_norm=self.max_update_norm)

    def build(self, local_epochs: int = 1) -> Strategy:
        """The strategy; stragglers draw their epochs from 1..``local_epochs`` (the trainer's).
        A user's strategy (an import path) is called with the arguments below it accepts."""
        from shoal.strategy.base import Strategy
        from shoal.strategy.fedavg import FedAvg
        from shoal.strategy.feddyn import FedDyn
        from shoal.strategy.fednova import FedNova
        from shoal.strategy.fedprox import PROXIMAL_MU
        from shoal.strategy.scaffold import Scaffold

        if self.proximal_mu < 0:
            raise ConfigError(f"strategy.proximal_mu must be >= 0, got {self.proximal_mu}")
        prox = {PROXIMAL_MU: self.proximal_mu} if self.name is StrategyName.FEDPROX else {}
        common: dict[str, Any] = dict(
            clients_per_round=self.clients_per_round,
            fraction=self.fraction,
            min_clients=self.min_clients,
            sampling=self.sampling,
            server_optimizer=self._server_optimizer(),
            client_config=prox,
            straggler_fraction=self.straggler_fraction,
            straggler_max_epochs=local_epochs,
            drop_stragglers=self.drop_stragglers,
        )
        if (robust := self.robust_aggregator()) is not None:  # else each strategy's own average
            common["aggregator"] = robust
        if isinstance(self.name, Ref):
            own = ["feddyn_alpha", "proximal_mu", "server_lr", "server_momentum", "beta1", "beta2", "tau"]
            own += ["buffer_size", "concurrency", "staleness_exponent"]
            offered = {**common, **{k: getattr(self, k) for k in own}}  # it takes those it declares
            made: Strategy = apps.build("strategy.name", self.name, Strategy, offered)
            return made
        if self.name is StrategyName.FEDDYN:
            return FedDyn(alpha=self.feddyn_alpha, **common)
        if self.name is StrategyName.FEDBUFF:
            from shoal.strategy.fedbuff import FedBuff

            return FedBuff(
                buffer_size=self.buffer_size,
                concurrency=self.concurrency,
                staleness_exponent=self.staleness_exponent,
                **common,
            )
        kind = {StrategyName.SCAFFOLD: Scaffold, StrategyName.FEDNOVA: FedNova}.get(self.name, FedAvg)
        return kind(**common)

    def robust_aggregator(self) -> RobustPipeline | None:
        """The robust rule with its pre-aggregation, or None (the strategy's own average)."""
        if self.aggregator is AggregatorName.MEAN and not self.pre_aggregation:
            return None
        from shoal.strategy.aggregators import Aggregator, mean
        from shoal.strategy.preagg import (
            Bucketing,
            Clip,
            NearestNeighborMixing,
            PreAggregator,
            RobustPipeline,
        )
        from shoal.strategy.robust import AGGREGATORS, CenteredClipping

        pre: dict[PreAggregationName, Callable[[], PreAggregator]] = {
            PreAggregationName.CLIP: lambda: Clip(self.clip_threshold),
            PreAggregationName.NNM: lambda: NearestNeighborMixing(self.attackers),
            PreAggregationName.BUCKETING: lambda: Bucketing(self.bucket_size),
        }
        rule: Aggregator
        if self.aggregator is AggregatorName.MEAN:
            rule = mean
        elif self.aggregator is AggregatorName.CENTERED_CLIPPING:
            rule = CenteredClipping(self.attackers, tau=self.cc_tau)
        else:
            rule = AGGREGATORS[self.aggregator.value](self.attackers)
        return RobustPipeline(rule, tuple(pre[p]() for p in self.pre_aggregation))

    def _check_robust(self) -> None:
        if self.attackers < 0:
            raise ConfigError(f"strategy.attackers must be >= 0, got {self.attackers}")
        if self.attackers and self.aggregator is AggregatorName.MEAN:
            raise ConfigError(
                f"strategy.attackers = {self.attackers}, but the mean tolerates none (one update can move "
                "it anywhere): set strategy.aggregator to median, trimmed-mean, geometric-median, krum, "
                "multi-krum, bulyan, centered-clipping or mda"
            )
        pipeline = self.robust_aggregator()
        if pipeline is None or self.fraction is not None:  # a fraction's cohort is known per round
            return
        from shoal.strategy.robust import RobustAggregator

        rule = pipeline.aggregator
        if isinstance(rule, RobustAggregator):
            buckets = PreAggregationName.BUCKETING in self.pre_aggregation
            n = -(-self.clients_per_round // self.bucket_size) if buckets else self.clients_per_round
            if why := rule.refusal(n):
                raise ConfigError(
                    f"strategy.aggregator: {why} (from clients_per_round = {self.clients_per_round}"
                    + (f" in buckets of {self.bucket_size})" if buckets else ")")
                    + ": raise clients_per_round or lower strategy.attackers"
                )

    def num_to_select(self, population: int) -> int:
        """Clients a round picks from ``population`` (what the config says, before any draw)."""
        if self.fraction is not None:
            return min(max(round(self.fraction * population), 1), population)
        return min(self.clients_per_round, population)

    def _server_optimizer(self) -> ServerOptimizer:
        from shoal.strategy.server_opt import Adaptive, AdaptiveRule, ServerMomentum, ServerSGD

        plain = (
            StrategyName.FEDAVG,
            StrategyName.FEDPROX,
            StrategyName.FEDNOVA,
            StrategyName.SCAFFOLD,
            StrategyName.FEDDYN,
            StrategyName.FEDBUFF,
        )
        user = isinstance(self.name, Ref)  # a user's strategy gets FedAvg's server step by default
        adaptive = not user and self.name not in (*plain, StrategyName.FEDAVGM)
        lr = self.server_lr if self.server_lr is not None else (0.01 if adaptive else 1.0)
        if user or self.name in plain:
            return ServerSGD(lr)
        if self.name is StrategyName.FEDAVGM:
            return ServerMomentum(lr, self.server_momentum)
        return Adaptive(
            AdaptiveRule(label(self.name).removeprefix("fed")), lr, self.beta1, self.beta2, self.tau
        )


@dataclass(frozen=True)
class EvalConfig:
    eval_every: int = 1  # rounds between centralized test-set evaluations (0: never)
    federated_eval_every: int = 0  # rounds between evaluations on client holdouts (0: never)
    federated_eval_clients: int = 10
    # scores beyond loss and accuracy, on the test set and the devices' holdouts (shoal/scores.py):
    # top2..top10, and for two-class models pr_auc, roc_auc, far, frr, precision, recall, f1
    metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(dict.fromkeys(self.metrics)))
        for name in self.metrics:
            check_metric(name)
        _at_least("eval.eval_every", self.eval_every, 0)
        _at_least("eval.federated_eval_every", self.federated_eval_every, 0)
        _at_least("eval.federated_eval_clients", self.federated_eval_clients, 1)


@dataclass(frozen=True)
class PrivacyConfig:
    mode: PrivacyMode = PrivacyMode.NONE
    noise_multiplier: float = 1.0  # z: Gaussian noise std = z * clip_norm (on the sum, or per update)
    clip_norm: float = 1.0  # C: every client's update is clipped to this L2 norm (start value if adaptive)
    delta: float | None = None  # None: 1 / num_clients^1.1, below one in the number of users
    adaptive_clipping: bool = False  # central: track a quantile of update norms (Andrew et al. 2021)
    target_quantile: float = 0.5  # adaptive: the norm quantile C follows
    clip_lr: float = 0.2  # adaptive: geometric step size of C
    clip_count_stddev: float | None = None  # adaptive: noise on the clip count; None: expected cohort / 20
    target_epsilon: float | None = None  # central, distributed: stop before epsilon would exceed this
    # distributed: a sum holding fewer devices' noise is not released; each device adds
    # 1/min_clients of the variance, so min_clients of them give noise std z * clip_norm
    min_clients: int = 2
    accountant: AccountantName = AccountantName.RDP  # rdp, or pld (tighter; Poisson sampling only)
    noise: NoiseName = NoiseName.SECURE  # "seeded" reproduces runs but must never protect real data

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", PrivacyMode(self.mode))
        object.__setattr__(self, "accountant", AccountantName(self.accountant))
        object.__setattr__(self, "noise", NoiseName(self.noise))
        if self.delta is not None and not 0.0 < self.delta < 1.0:
            raise ConfigError(f"privacy.delta must be in (0, 1), got {self.delta}")
        self._central(100), self._local(100), self._distributed(100)  # the constructors check every value

    def delta_for(self, num_clients: int | None) -> float:
        """delta as set, or 1 / N^1.1 for a population of N (None: a deployment's, unknown)."""
        if self.delta is not None:
            return float(self.delta)
        if num_clients is None:
            raise ConfigError(
                "privacy.delta defaults to 1 / N^1.1 for N users, but a deployed server cannot "
                "count its devices' users: set privacy.delta below 1 / (the most users you expect)"
            )
        return math.pow(num_clients, -1.1)

    def build(self, num_clients: int | None) -> CentralDP | LocalDP | None:
        """The DP transform for a population of ``num_clients`` (None: unknown), or None
        (distributed DP is not a transform of its own: see :meth:`ring_encoder`)."""
        if self.mode is PrivacyMode.CENTRAL:
            return self._central(num_clients)
        if self.mode is PrivacyMode.LOCAL:
            return self._local(num_clients)
        return None

    def ring_encoder(self, num_clients: int | None) -> DistributedDP | None:
        """Distributed DP's encoder for secure aggregation's ring, or None."""
        return self._distributed(num_clients) if self.mode is PrivacyMode.DISTRIBUTED else None

    def _distributed(self, num_clients: int | None) -> DistributedDP:
        from shoal.privacy.distributed import DistributedDP

        return DistributedDP(
            noise_multiplier=self.noise_multiplier,
            clip_norm=self.clip_norm,
            min_clients=self.min_clients,
            delta=self.delta_for(num_clients),
            target_epsilon=self.target_epsilon,
            noise=self.noise,
        )

    def _local(self, num_clients: int | None) -> LocalDP:
        from shoal.privacy.local import LocalDP

        return LocalDP(self.clip_norm, self.noise_multiplier, self.delta_for(num_clients), self.noise)

    def _central(self, num_clients: int | None) -> CentralDP:
        from shoal.privacy.central import CentralDP

        return CentralDP(
            noise_multiplier=self.noise_multiplier,
            clip_norm=self.clip_norm,
            delta=self.delta_for(num_clients),
            adaptive=self.adaptive_clipping,
            target_quantile=self.target_quantile,
            clip_lr=self.clip_lr,
            clip_count_stddev=self.clip_count_stddev,
            target_epsilon=self.target_epsilon,
            accountant=self.accountant,
            noise=self.noise,
        )


@dataclass(frozen=True)
class SecAggConfig:
    mode: SecAggMode = SecAggMode.NONE
    bound: float = 1.0  # update coordinates are clamped to [-bound, bound] for fixed point
    # share of a client's neighbours that must stay to unmask; >= 2/3: the bound Bonawitz et
    # al. 2017 prove against an active server (t > 2k/3), checked by SecureAggregation
    threshold: float = 2 / 3
    degree: int | None = None  # secagg+: graph degree (None: about 3 log2 of the cohort)
    # inputs are masked and summed mod 2^ring_bits and sent at ring_bits a coordinate (8..32):
    # 16 halves the upload; below 32, fixed point rounds stochastically (unbiased)
    ring_bits: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", SecAggMode(self.mode))
        from shoal.secagg.transform import SecureAggregation

        SecureAggregation(bound=self.bound, threshold=self.threshold, ring_bits=self.ring_bits)  # checks

    def build(self, encoder: RingEncoder | None = None) -> SecureAggregation | None:
        """The transform, encoding with ``encoder`` (None: fixed point at ``bound``)."""
        if self.mode is SecAggMode.NONE:
            return None
        from shoal.secagg.transform import SecureAggregation

        plus = self.mode is SecAggMode.SECAGG_PLUS
        return SecureAggregation(
            self.bound, self.threshold, plus, self.degree, ring_bits=self.ring_bits, encoder=encoder
        )


@dataclass(frozen=True)
class HEConfig:
    enabled: bool = (
        False  # CKKS (TenSEAL): clients encrypt, the server adds, a key authority decrypts the sum
    )
    poly_modulus_degree: int = 8192  # ciphertext slots = half of it
    scale_bits: int = 40  # CKKS precision: about 1e-7 on updates at 2^40
    # Over the network the key holder is its own party (`shoal keyholder`): its host:port, for
    # the server, and its public.ckks, which server and devices pin (their parameters win).
    # A simulation keeps the keys in its own process and takes neither.
    keyholder: str | None = None
    public_key: str | None = None

    def __post_init__(self) -> None:
        if (self.keyholder is None) != (self.public_key is None):
            raise ConfigError(
                "he.keyholder and he.public_key go together: the key holder's host:port and the "
                "public.ckks it wrote (shoal keyholder --out KEYDIR)"
            )

    def params(self) -> CKKSParams:
        from shoal.he.ckks import CKKSParams

        return CKKSParams(self.poly_modulus_degree, scale_bits=self.scale_bits)

    def build(self) -> HomomorphicAggregation | None:
        """The transform: with the key holder's keys when it is its own party (the server
        attaches its line to it), else with a key authority in this process."""
        if not self.enabled:
            return None
        from shoal.he.ckks import HomomorphicAggregation, KeyAuthority

        if self.public_key is not None:
            from shoal.he.keyholder import read_public

            params, context = read_public(self.public_key)
            return HomomorphicAggregation(None, context, params.slots)
        return HomomorphicAggregation(KeyAuthority(self.params()))


_SPARSE = (CompressorName.TOP_K, CompressorName.RANDOM_MASK)


@dataclass(frozen=True)
class CompressionConfig:
    # how each update travels to the server (bench/compression.py measures what each costs):
    # none, half (float16), quantize (`bits` a value), top-k and random-mask (`keep_fraction` of
    # the values), sign (1 bit a value), powersgd (rank-`rank` factors of each weight matrix)
    uplink: CompressorName = CompressorName.NONE
    bits: int = 4  # quantize: 8, 4, 2 or 1
    keep_fraction: float = 0.01  # top-k, random-mask: share of the values sent, at most 0.5
    # top-k, random-mask: how the kept values travel: none (float32), half, quantize (`bits`
    # each; unbiased, so not with error feedback) or sign (1 bit and a scale a block)
    values: CompressorName = CompressorName.NONE
    rank: int = 4  # powersgd: factor rank; layers the factors would not shrink travel dense
    block: int = 1024  # quantize, sign: values sharing one range or scale
    stochastic: bool = True  # quantize: unbiased random rounding; false: the nearest level
    # the device adds what its earlier uploads left out before compressing; None: on for
    # the biased codecs (top-k, sign, powersgd), off for the unbiased ones
    error_feedback: bool | None = None
    # how the model travels to the devices: none (float32), half, or quantize (8 bits,
    # nearest level); devices train from what they received
    downlink: CompressorName = CompressorName.NONE

    def __post_init__(self) -> None:
        object.__setattr__(self, "uplink", CompressorName(self.uplink))
        object.__setattr__(self, "downlink", CompressorName(self.downlink))
        object.__setattr__(self, "values", CompressorName(self.values))
        dense = (CompressorName.NONE, CompressorName.HALF, CompressorName.QUANTIZE)
        if self.downlink not in dense:
            raise ConfigError(
                f"compression.downlink is {self.downlink.value!r}; the model travels as none, half or "
                "quantize (a sparse or low-rank model would be a different model, not a compressed one)"
            )
        if self.values not in (*dense, CompressorName.SIGN):
            raise ConfigError(
                f"compression.values is {self.values.value!r}; choose none, half, quantize or sign"
            )
        if self.values is not CompressorName.NONE and self.uplink not in _SPARSE:
            raise ConfigError(
                "compression.values encodes the values top-k or random-mask keep: set uplink to one of "
                "them, or use uplink = 'quantize' (or 'half') for the whole update"
            )
        if self.error_feedback is not None and self.uplink is CompressorName.NONE:
            raise ConfigError("compression.error_feedback needs a compressor: set compression.uplink")
        self.build(((1,),))  # the constructors check every value

    def build(self, shapes: Sequence[tuple[int, ...]]) -> Compressor | None:
        """The uplink codec for a model of these tensor shapes (None: float32)."""
        from shoal.transforms import (
            HalfPrecision,
            PowerSGD,
            RandomMask,
            SignCompression,
            StochasticQuantization,
            TopK,
        )

        kw: dict[str, Any] = {} if self.error_feedback is None else {"error_feedback": self.error_feedback}

        def quantize(**more: Any) -> StochasticQuantization:
            return StochasticQuantization(self.bits, self.block, self.stochastic, **more)

        codecs: dict[CompressorName, Callable[[], Compressor]] = {
            CompressorName.HALF: HalfPrecision,
            CompressorName.QUANTIZE: quantize,
            CompressorName.SIGN: lambda: SignCompression(self.block),
        }
        value_codec = codecs.get(self.values)
        sparse = {**kw, "values": value_codec() if value_codec else None}
        table: dict[CompressorName, Callable[[], Compressor]] = {
            CompressorName.HALF: lambda: HalfPrecision(**kw),
            CompressorName.QUANTIZE: lambda: quantize(**kw),
            CompressorName.TOP_K: lambda: TopK(self.keep_fraction, **sparse),
            CompressorName.RANDOM_MASK: lambda: RandomMask(self.keep_fraction, **sparse),
            CompressorName.SIGN: lambda: SignCompression(self.block, **kw),
            CompressorName.POWERSGD: lambda: PowerSGD(self.rank, tuple(shapes), **kw),
        }
        return None if self.uplink is CompressorName.NONE else table[self.uplink]()


@dataclass(frozen=True)
class SplitSection:
    """``[split]``: split learning instead of FedAvg's whole-model rounds (shoal/split/). The
    device trains the layers before ``cuts[0]``; the server the rest (or, U-shaped with two
    cuts, the layers between them, the head staying on the device). Devices train with the
    [trainer]'s lr, batch_size and local_epochs (plain SGD), [strategy] clients_per_round."""

    protocol: SplitProtocol | None = None  # None: not a split-learning run
    cuts: tuple[int, ...] = ()  # layer indices of the model's nn.Sequential
    # Gaussian noise on what a device sends (std, in activation units): it blurs the
    # activations; it is not differential privacy (nothing bounds their sensitivity)
    activation_noise: float = 0.0
    activation_rng: NoiseName = NoiseName.SECURE  # "seeded": reproducible noise, for experiments only

    def __post_init__(self) -> None:
        if self.protocol is not None:
            object.__setattr__(self, "protocol", SplitProtocol(self.protocol))
            if len(self.cuts) not in (1, 2):
                raise ConfigError(
                    "split.cuts must name one layer index (vanilla) or two (U-shaped: the head stays "
                    f"on the device), got {list(self.cuts)}; e.g. cuts = [3]"
                )
        elif self.cuts:
            raise ConfigError("split.cuts is read only with split.protocol set (e.g. 'splitnn')")
        object.__setattr__(self, "activation_rng", NoiseName(self.activation_rng))
        if not (self.activation_noise >= 0 and math.isfinite(self.activation_noise)):
            raise ConfigError(f"split.activation_noise must be a std >= 0, got {self.activation_noise}")


@dataclass(frozen=True)
class RunConfig:
    # 30 rounds of 10 clients x 5 epochs on the MNIST subset reach ~95% in about a minute.
    rounds: int = 30
    seed: int = 0
    backend: BackendName = BackendName.AUTO
    cohort_size: int = 32  # vectorized backend: clients trained at once; small keeps weights in cache
    ray_address: str | None = None  # backend = "ray": None starts a local Ray; "auto" or "ray://host:10001"
    ray_workers: int = 2  # backend = "ray": actors, each holding a fixed share of the clients
    transforms: tuple[Ref, ...] = ()  # your own update transforms: "package.module:MyTransform"
    # your client app: an app builder, or a function (model, trainer) -> ClientApp;
    # None: the [trainer] table's TorchTrainer
    client: Ref | None = None
    # simulated clients as devices of a fleet on a virtual clock: a built-in fleet
    # ("phones", "iot") or a TOML file in their format; None: every client always there
    fleet: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    trainer: TorchTrainer = field(
        default_factory=lambda: TorchTrainer(lr=0.05, local_epochs=5, batch_size=10)
    )
    personalization: Personalization = field(default_factory=Personalization)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    he: HEConfig = field(default_factory=HEConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    split: SplitSection = field(default_factory=SplitSection)

    def __post_init__(self) -> None:
        _at_least("rounds", self.rounds, 1)
        _at_least("cohort_size", self.cohort_size, 1)
        _at_least("ray_workers", self.ray_workers, 1)
        object.__setattr__(
            self,
            "transforms",
            tuple(t if isinstance(t, Ref) else Ref.parse("transforms", t) for t in self.transforms),
        )
        if self.client is not None:
            object.__setattr__(self, "client", Ref.parse("client", self.client))
        # every device builds its trainer from [trainer]; personalization travels with it
        object.__setattr__(
            self,
            "trainer",
            replace(
                self.trainer,
                personalization=self.personalization,
                continual=self.continual,
                eval_metrics=self.eval.metrics,
            ),
        )
        rules.check(self)
