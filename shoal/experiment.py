"""From a :class:`RunConfig` to a finished run folder: what ``shoal run`` does."""

from __future__ import annotations

import functools
import importlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from shoal import apps
from shoal import config as cfgmod
from shoal.apps import Ref, label
from shoal.attacks.poison import CollusionAttack
from shoal.client.app import AppBuilder, ClientApp
from shoal.client.hparams import TorchTrainer
from shoal.config import DatasetName, RunConfig, StrategyName
from shoal.config.names import BackendName, CompressorName, ModelName
from shoal.data.datasets import ClientData, FederatedDataset, LabeledData, ServerData
from shoal.data.loaders import digits, fashion_mnist, load_csv, mnist_subset
from shoal.data.partition import partition
from shoal.data.shakespeare import shakespeare
from shoal.data.synthetic import synthetic
from shoal.errors import CheckpointError, ConfigError, DataError
from shoal.models import ModelFactory, char_lstm, cnn_bn, mcmahan_2nn, mcmahan_cnn, mlp, sensor_cnn
from shoal.params import ParamSpec, save_params
from shoal.pretrain import start
from shoal.runtime.backend import Backend, InProcessBackend
from shoal.runtime.history import History, MetricsLog, Record
from shoal.runtime.simulation import Callback, Simulation
from shoal.runtime.vectorized import VectorizedBackend, cohort_supported, cohorts_pay_off
from shoal.scores import binary
from shoal.strategy.base import Strategy
from shoal.transforms.base import UpdateTransform

if TYPE_CHECKING:
    from shoal.split.config import SplitConfig


def load_data(cfg: RunConfig) -> FederatedDataset:
    """The clients' data ``cfg`` names; with ``[continual] drift``, following its schedule."""
    data = _load_data(cfg)
    schedule = cfg.continual.schedule(data, cfg.seed)
    if schedule is None:
        return data
    from shoal.data.drift import drifting

    return drifting(data, schedule)


def _load_data(cfg: RunConfig) -> FederatedDataset:
    d = cfg.data
    if isinstance(d.dataset, Ref):  # the user's loader: their own clients, or one set to partition
        offered = {
            "path": d.path,
            "num_clients": d.num_clients,
            "seed": cfg.seed,
            "test_fraction": d.test_fraction,
        }
        loaded = apps.build("data.dataset", d.dataset, (FederatedDataset, LabeledData), offered)
        if isinstance(loaded, FederatedDataset):
            return loaded
        return _partition(cfg, loaded)
    if d.dataset is DatasetName.SYNTHETIC:  # natural clients: the partition keys do not apply
        return synthetic(d.synthetic_alpha, d.synthetic_beta, d.num_clients, cfg.seed, d.synthetic_iid)
    if d.dataset is DatasetName.SYNTHETIC_POPULATION:  # made lazily: a population of millions
        from shoal.data.population import synthetic_population

        return synthetic_population(d.num_clients, d.synthetic_alpha, d.synthetic_beta, cfg.seed)
    if d.dataset is DatasetName.SHAKESPEARE:  # natural clients too: num_clients keeps the largest roles
        return shakespeare(d.num_clients)
    if d.dataset in _USE_CASES:  # the use cases' data: natural clients, made from the seed
        module, name = _USE_CASES[d.dataset].split(":")
        make: Callable[..., FederatedDataset] = getattr(importlib.import_module(module), name)
        return make(d.num_clients, seed=cfg.seed, holdout_fraction=d.holdout_fraction)
    return _partition(cfg, labeled(d.dataset, d.path, d.label_column, d.test_fraction, cfg.seed))


_USE_CASES = {
    DatasetName.HOSPITALS: "shoal.data.hospitals:hospitals",
    DatasetName.FRAUD: "shoal.data.fraud:fraud",
    DatasetName.WAKE_WORD: "shoal.data.wakeword:wake_word",
    DatasetName.VEHICLES: "shoal.data.vehicles:vehicles",
}


def labeled(
    name: DatasetName, path: str | None, label_column: str, test_fraction: float, seed: int
) -> LabeledData:
    """One of the built-in datasets that come as one labelled set (before any partition)."""
    if name is DatasetName.FASHION_MNIST:
        return fashion_mnist(path)
    if name is DatasetName.DIGITS:
        return digits(test_fraction, seed)
    if name is DatasetName.CSV:
        return load_csv(path or "", label_column, test_fraction, seed)
    if name is DatasetName.MNIST_SUBSET:
        return mnist_subset(test_fraction, seed)
    raise ConfigError(f"{name.value} has natural clients, not one labelled set")


def server_data(cfg: RunConfig, load_test: bool = True) -> ServerData:
    """What a deployed server loads: the model's shapes from the config and, when
    ``data.test_path`` names one (and ``load_test``), its own test set. Never the devices'
    data."""
    d = cfg.data
    if d.input_shape is None or d.num_classes is None:
        raise ConfigError(
            "a deployment builds the model before any device's data arrives: set data.input_shape "
            "(one example's shape, e.g. [8]) and data.num_classes (or data.classes) in the config; "
            "or give server and devices --experiment to serve the config's dataset cut into clients"
        )
    test = None
    if d.test_path is not None and load_test:
        test = local_data(cfg, d.test_path, holdout_fraction=0.0).train
    return ServerData(label(d.dataset), d.num_classes, d.input_shape, test)


def device_data(cfg: RunConfig, path: str | Path) -> ClientData:
    """One device's own files at ``path``: what it trains on and, with
    ``data.holdout_fraction`` > 0, what it holds out for federated evaluation."""
    return local_data(cfg, path, cfg.data.holdout_fraction)


def local_data(cfg: RunConfig, path: str | Path, holdout_fraction: float) -> ClientData:
    """Files at ``path`` read by the config's loader (the user's, given ``path``) or by
    their format (:func:`shoal.data.local.read_local`), checked against the model's shapes."""
    from shoal.data.local import read_local

    d = cfg.data
    if isinstance(d.dataset, Ref):
        offered = {"path": str(path), "seed": cfg.seed, "test_fraction": holdout_fraction, "num_clients": 1}
        loaded = apps.build("data.dataset", d.dataset, (LabeledData, ClientData), offered)
    else:
        loaded = read_local(
            path,
            label_column=d.label_column,
            classes=d.classes or None,
            test_fraction=holdout_fraction,
            seed=cfg.seed,
        )
    client = loaded if isinstance(loaded, ClientData) else ClientData(loaded.train, loaded.test)
    for part in (client.train, client.test):
        if part is not None:
            _check_examples(cfg, part.x.shape[1:], int(part.y.max()) + 1 if len(part) else 0, str(path))
    return client


def _check_examples(cfg: RunConfig, shape: tuple[int, ...], classes: int, source: str) -> None:
    """Data whose examples the configured model cannot take, refused with both shapes."""
    d = cfg.data
    if d.input_shape is not None and tuple(shape) != tuple(d.input_shape):
        raise DataError(
            f"{source}: examples have shape {list(shape)} but data.input_shape is {list(d.input_shape)}; "
            "fix the data or the config (every device must match the server's model)"
        )
    if d.num_classes is not None and classes > d.num_classes:
        raise DataError(
            f"{source}: labels go up to {classes - 1} but data.num_classes is {d.num_classes}; "
            "labels must be 0..num_classes-1 on every device"
        )


def _partition(cfg: RunConfig, central: LabeledData) -> FederatedDataset:
    """One dataset cut into clients (the partition-of-one-dataset mode, for experiments)."""
    d = cfg.data
    return partition(
        central,
        d.partition,
        d.num_clients,
        seed=cfg.seed,
        dirichlet_alpha=d.dirichlet_alpha,
        shards_per_client=d.shards_per_client,
        quantity_sigma=d.quantity_sigma,
        holdout_fraction=d.holdout_fraction,
    )


def model_factory(cfg: RunConfig, data: FederatedDataset | ServerData) -> ModelFactory:
    """A picklable factory (a partial), so it can travel to other processes. The shapes are
    the config's where it sets them (so a simulation builds the model a deployment would),
    else the data's."""
    shape = cfg.data.input_shape or data.input_shape
    classes = cfg.data.num_classes or data.num_classes
    if isinstance(cfg.model.name, Ref):
        return functools.partial(user_model, cfg.model.name, shape, classes, cfg.model.hidden)
    if cfg.model.name is ModelName.MCMAHAN_CNN:
        return functools.partial(mcmahan_cnn, shape, classes)
    if cfg.model.name is ModelName.CNN_BN:
        return functools.partial(cnn_bn, shape, classes)
    if cfg.model.name is ModelName.MCMAHAN_2NN:
        return functools.partial(mcmahan_2nn, shape, classes)
    if cfg.model.name is ModelName.CHAR_LSTM:
        return functools.partial(char_lstm, classes, cfg.model.hidden)
    if cfg.model.name is ModelName.SENSOR_CNN:
        return functools.partial(sensor_cnn, shape, classes, cfg.model.hidden)
    return functools.partial(mlp, shape, classes, cfg.model.hidden)


def user_model(
    ref: str, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...]
) -> nn.Module:
    """The user's model (module level, so a partial of it pickles for Ray workers)."""
    offered = {"input_shape": input_shape, "num_classes": num_classes, "hidden": hidden}
    module: nn.Module = apps.build("model.name", ref, nn.Module, offered)
    return module


def make_transforms(refs: Sequence[Ref]) -> list[UpdateTransform]:
    """The user's own transforms, built from their import paths."""
    return [apps.build("transforms", r, UpdateTransform, {}) for r in refs]


def app_builder(cfg: RunConfig) -> AppBuilder:
    """What builds the client app: the ``[trainer]`` table's TorchTrainer, or ``client``."""
    if cfg.client is None:
        return cfg.trainer
    found = apps.resolve("client", cfg.client)
    if hasattr(found, "build"):
        builder: AppBuilder = found
        return builder
    return UserClient(cfg.client, cfg.trainer)


@dataclass(frozen=True)
class UserClient:
    """An app builder around a user's function ``(model, trainer) -> ClientApp``."""

    ref: str
    trainer: TorchTrainer

    def build(self, model: ModelFactory) -> ClientApp:
        app: ClientApp = apps.build("client", self.ref, ClientApp, {"model": model, "trainer": self.trainer})
        return app


def make_backend(
    cfg: RunConfig,
    model: ModelFactory,
    data: FederatedDataset,
    transforms: list[UpdateTransform],
    clients_per_round: int,
) -> Backend:
    name = cfg.backend
    builder = app_builder(cfg)
    if cfg.client is not None and name is BackendName.AUTO:
        name = BackendName.INPROCESS  # the cohorts run the default trainer only
    if cfg.client is not None and name is BackendName.VECTORIZED:
        raise ConfigError(
            'backend = "vectorized" trains with the default trainer; a custom client runs '
            'with backend = "inprocess" or "ray"'
        )
    if name in (BackendName.AUTO, BackendName.VECTORIZED):
        probe = model()
        if name is BackendName.AUTO:
            pays = cohorts_pay_off(probe, cfg.trainer, clients_per_round)
            name = BackendName.VECTORIZED if pays else BackendName.INPROCESS
        elif reason := cohort_supported(probe, cfg.trainer):
            raise ConfigError(f'backend = "vectorized": {reason}; use backend = "inprocess"')
    if name is BackendName.VECTORIZED:
        return VectorizedBackend(cfg.trainer, model, data, transforms, cfg.seed, cfg.cohort_size)
    if name is BackendName.RAY:
        from shoal.runtime.ray_backend import RayBackend  # Ray is an optional dependency

        return RayBackend(
            builder,
            model,
            data,
            transforms,
            cfg.seed,
            address=cfg.ray_address,
            num_workers=cfg.ray_workers,
        )
    return InProcessBackend(builder, model, data, transforms, cfg.seed)


def population(data: FederatedDataset | ServerData) -> int | None:
    """How many clients a run has: every simulated one, or unknown for a deployment."""
    return len(data) if isinstance(data, FederatedDataset) else None


def over_select(strategy: Strategy, wanted: int, share: float) -> float:
    """Pick ``share`` more devices than the ``wanted`` a round needs; returns the share of
    the picked that the round commits on (its first answers)."""
    if share <= 0:
        return 1.0
    from shoal.strategy.fedavg import FedAvg

    if not isinstance(strategy, FedAvg):
        raise ConfigError(
            "strategy.over_selection needs a FedAvg-family strategy (it sets clients_per_round)"
        )
    strategy.fraction, strategy.clients_per_round = None, math.ceil(wanted * (1 + share))
    return wanted / strategy.clients_per_round


def fleet_backend(
    cfg: RunConfig, model: ModelFactory, data: FederatedDataset, inner: Backend, strategy: Strategy
) -> Backend:
    """``inner``'s clients as devices of the config's fleet, on a virtual clock."""
    from shoal.fleet.backend import FleetBackend, RoundPolicy
    from shoal.fleet.cost import train_flops_per_example
    from shoal.fleet.devices import Fleet
    from shoal.fleet.spec import load_fleet
    from shoal.strategy.fedbuff import FedBuff

    assert cfg.fleet is not None
    wanted = cfg.strategy.num_to_select(len(data))
    commit = over_select(strategy, wanted, cfg.strategy.over_selection)
    buffer = strategy.buffer_size if isinstance(strategy, FedBuff) else None
    sample = next(c.train for c in data.clients.values() if len(c.train))
    return FleetBackend(
        inner,
        Fleet(load_fleet(cfg.fleet), data.client_ids, cfg.seed),
        data.sizes(),
        train_flops_per_example(model, sample),
        cfg.trainer,
        RoundPolicy(cfg.strategy.deadline_s, commit, buffer),
        min_available=1 if buffer else math.ceil(wanted / commit),
    )


def build_transforms(cfg: RunConfig, num_clients: int | None, model: ModelFactory) -> list[UpdateTransform]:
    """The update path in order: DP first (its client half sees the raw update, its server
    half the decoded one: central DP clips what was decoded, so compression never changes
    its sensitivity), the user's transforms, the uplink compressor, then secure or
    homomorphic aggregation (masking is the last step on the device, unmasking the first
    on the server)."""
    transforms = make_transforms(cfg.transforms)
    private = cfg.privacy.build(num_clients)
    if private is not None:
        transforms.insert(0, private)
    low_rank = cfg.compression.uplink is CompressorName.POWERSGD  # it factors each weight matrix
    compressor = cfg.compression.build(ParamSpec.from_module(model()).shapes if low_rank else ())
    hp = cfg.trainer
    if (
        hp.attack is not None and hp.attack.colluding
    ):  # after the decoders on the server: the attackers forge from decoded updates
        transforms.append(CollusionAttack(hp.attack, hp.attack_fraction, hp.attack_seed, hp.attack_scale))
    if compressor is not None:
        transforms.append(compressor)
    hidden = cfg.secagg.build(cfg.privacy.ring_encoder(num_clients)) or cfg.he.build()
    if hidden is not None:
        transforms.append(hidden)
    return transforms


def _check_personal_layers(cfg: RunConfig, model: ModelFactory) -> None:
    """Personal layers that name nothing (or everything) are refused before any device trains."""
    method = cfg.personalization.method
    if method is None or not method.layered:
        return
    from shoal.personal.layers import personal_names

    try:
        personal_names(ParamSpec.from_module(model()), method, cfg.personalization.personal_layers)
    except ValueError as exc:
        raise ConfigError(f"personalization.method = {method.value!r}: {exc}") from None


def build(
    cfg: RunConfig,
    out_dir: Path | None,
    *,
    data: FederatedDataset | ServerData | None = None,
    strategy: Strategy | None = None,
    transforms: list[UpdateTransform] | None = None,
    backend: Backend | None = None,
    resuming: bool = False,
) -> Simulation:
    """The run ``cfg`` describes; the server passes its own pieces (the network backend and,
    in a deployment, :class:`ServerData` in place of the clients' data). ``resuming``: the
    weights will come from the checkpoint, so the initial ones are not made (no pretraining)."""
    data = data or load_data(cfg)
    if isinstance(data, FederatedDataset):
        _check_examples(cfg, data.input_shape, data.num_classes, f"data.dataset {label(cfg.data.dataset)}")
        wanted = cfg.strategy.clients_per_round
        if cfg.strategy.fraction is None and wanted > len(data):
            raise ConfigError(
                f"strategy.clients_per_round is {wanted} but the data holds {len(data)} clients; "
                f"lower clients_per_round or raise data.num_clients"
            )
    model = model_factory(cfg, data)
    _check_personal_layers(cfg, model)
    transforms = transforms if transforms is not None else build_transforms(cfg, population(data), model)
    strategy = strategy or cfg.strategy.build(cfg.trainer.local_epochs)
    if backend is None:
        if not isinstance(data, FederatedDataset):
            raise ConfigError("a deployment's devices are remote: serve it with shoal server")
        backend = make_backend(cfg, model, data, transforms, cfg.strategy.num_to_select(len(data)))
        if cfg.fleet is not None:
            backend = fleet_backend(cfg, model, data, backend, strategy)
        elif cfg.strategy.name is StrategyName.FEDBUFF:
            raise ConfigError(
                'strategy.name = "fedbuff" aggregates results as they arrive, on a clock: simulate '
                'devices with fleet = "phones" (or your fleet file), or serve it with shoal server'
            )
        elif cfg.strategy.over_selection or cfg.strategy.deadline_s is not None:
            raise ConfigError(
                "strategy.over_selection and deadline_s need a clock: simulate devices with "
                'fleet = "phones" (or your fleet file), or serve the run with shoal server'
            )
    classes = cfg.data.num_classes or data.num_classes
    if (two_class := binary(cfg.eval.metrics)) and classes != 2:
        raise ConfigError(
            f"eval.metrics {', '.join(two_class)} score a two-class model (class 1 the positive one), "
            f"but this model has {classes} classes: drop them or use top2..top10"
        )
    first = None
    if not resuming and cfg.model.init != "random":
        first = start(
            cfg, model, cfg.data.input_shape or data.input_shape, cfg.data.num_classes or data.num_classes
        )
    sim = Simulation(
        model,
        data,
        strategy,
        app_builder(cfg),
        params=None if first is None else first.params,
        seed=cfg.seed,
        transforms=transforms,
        backend=backend,
        eval_every=cfg.eval.eval_every,
        federated_eval_every=cfg.eval.federated_eval_every,
        federated_eval_clients=cfg.eval.federated_eval_clients,
        out_dir=out_dir,
        limits=cfg.strategy.limits(data.sizes().values() if isinstance(data, FederatedDataset) else None),
        downlink=None if cfg.compression.downlink is CompressorName.NONE else cfg.compression.downlink,
        metrics=cfg.eval.metrics,
    )
    if first is not None:  # what the first devices receive, for the summary
        sim.initial.update(init=first.how, pretrain_examples=first.examples, pretrain_seconds=first.seconds)
        if first.proxy_accuracy is not None:
            sim.initial["pretrain_proxy_accuracy"] = first.proxy_accuracy
        if (tested := sim.test(first.params)) is not None:
            sim.initial["initial_test_accuracy"] = tested[1]
    return sim


def run(cfg: RunConfig, out_dir: Path, callbacks: Sequence[Callback] = ()) -> History:
    """A fresh run into ``out_dir``: config.toml, metrics.jsonl, checkpoints, model, summary."""
    if cfg.he.keyholder is not None:
        raise ConfigError(
            "he.keyholder is the network key holder, for shoal server; a simulation keeps the CKKS "
            "keys in its own process: drop he.keyholder and he.public_key to simulate"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.toml").write_text(cfgmod.to_toml(cfg))
    (out_dir / "metrics.jsonl").write_text("")
    if cfg.split.protocol is not None:
        return run_split(cfg, out_dir, callbacks)
    sim = build(cfg, out_dir)
    return finish(sim, sim.run(cfg.rounds, callbacks), cfg, out_dir)


def split_config(cfg: RunConfig, data: FederatedDataset) -> SplitConfig:
    """The split-learning settings ``cfg`` describes: [split], with [trainer]'s SGD and
    [strategy]'s round size."""
    from shoal.split.config import SplitConfig

    assert cfg.split.protocol is not None
    t = cfg.trainer
    return SplitConfig(
        cuts=cfg.split.cuts,
        protocol=cfg.split.protocol,
        lr=t.lr,
        batch_size=t.batch_size,
        local_epochs=t.local_epochs,
        clients_per_round=cfg.strategy.clients_per_round,
        seed=cfg.seed,
        activation_noise=cfg.split.activation_noise,
        noise=cfg.split.activation_rng,
        max_num_examples=cfg.strategy.max_num_examples or max(max(data.sizes().values()), 1),
    )


def run_split(cfg: RunConfig, out_dir: Path, callbacks: Sequence[Callback] = ()) -> History:
    """A split-learning run (``[split]``) into ``out_dir``: the same files as a federated one."""
    from shoal.split.runner import run_split as train

    data = load_data(cfg)
    model = model_factory(cfg, data)
    log = MetricsLog(out_dir / "metrics.jsonl")

    def record(r: Record) -> None:
        log.append(r)
        for cb in callbacks:
            cb(r)

    history = train(model, data, split_config(cfg, data), cfg.rounds, cfg.eval.eval_every, on_record=record)
    save_params(
        out_dir / "model.safetensors", history.params, history.spec, {"model_hash": history.model_hash}
    )
    summary = {
        **_summary(history, cfg),
        "device_flops": sum(int(r["device_flops"]) for r in history.records),
        "backend": f"split learning ({cfg.split.protocol})",
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    history.extra["summary"] = summary
    return history


def resume(out_dir: Path, rounds: int | None = None, callbacks: Sequence[Callback] = ()) -> History:
    """Continue an interrupted run from its last checkpoint, to its configured round count."""
    if not (out_dir / "config.toml").is_file():
        raise CheckpointError(f"{out_dir} has no config.toml; pass the folder of a shoal run")
    cfg = cfgmod.load(out_dir / "config.toml")
    if cfg.split.protocol is not None:
        raise CheckpointError("a split-learning run keeps no checkpoints to resume from; run it again")
    sim = build(cfg, out_dir, resuming=True)
    sim.resume()
    return finish(sim, sim.run(rounds or cfg.rounds, callbacks), cfg, out_dir)


def _summary(history: History, cfg: RunConfig) -> dict[str, object]:
    """What every run's summary.json holds, federated or split."""
    return {
        "rounds": len(history.records),
        "final_test_accuracy": history.final_accuracy,
        "model_hash": history.model_hash,
        "bytes_up": history.bytes_up,
        "bytes_down": history.bytes_down,
        "num_params": history.spec.num_params,
        "seed": cfg.seed,
    }


def finish(sim: Simulation, history: History, cfg: RunConfig, out_dir: Path) -> History:
    """Write summary.json for a finished run (simulated or served) and return the history."""
    summary = {
        **_summary(history, cfg),
        "wall_time": history.records[-1]["elapsed"] if history.records else 0.0,
        "backend": type(sim.backend).__name__,
    }
    for key in ("dp_epsilon", "ldp_epsilon_worst_client"):
        values = history.series(key)
        if values:
            summary[key] = values[-1][1]
            summary["dp_delta"] = cfg.privacy.delta_for(population(sim.data))
    for name in cfg.eval.metrics:  # the use case's own figures, as last measured
        for key in (f"test_{name}", f"fed_eval_{name}"):
            if values := history.series(key):
                summary[f"final_{key}"] = values[-1][1]
    if sim.client_scores:  # the last federated evaluation, device by device
        summary["clients"] = sim.client_scores
    summary.update(sim.initial)
    if history.stopped:
        summary["stopped"] = history.stopped
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    history.extra["summary"] = summary
    return history
