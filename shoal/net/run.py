"""``shoal server`` as a Python call: the run a config describes, served to remote devices.

The server builds the run exactly as a simulation would (model, strategy, transforms,
evaluation, checkpoints, result limits) but with a :class:`~shoal.net.backend.GrpcBackend`
in place of simulated clients. Devices load the same config through
:func:`shoal.net.client.device_for`.

Two modes. A **deployment** (the default): devices train on their own files
(``shoal client --data PATH``); the server loads none of them, builds the model from the
config's shapes, tests on its own test set if the config names one, and admits any device
that authenticates (a CA-signed certificate, a token). An **experiment**
(``partition=True``): the config's dataset cut into clients, each device training its
shard; the server loads the dataset for its test split and admits only its client ids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from shoal import config as cfgmod
from shoal import experiment
from shoal.dashboard import DashboardSpec
from shoal.data.datasets import FederatedDataset, ServerData
from shoal.errors import ConfigError
from shoal.he.ckks import HomomorphicAggregation
from shoal.he.keyholder import RemoteKeyAuthority
from shoal.net.backend import GrpcBackend, NetworkChannel
from shoal.net.client import refuse_unsupported
from shoal.net.registry import Registry
from shoal.net.server import start_server
from shoal.net.tls import ClientTLS, TLSFiles
from shoal.net.uploads import UploadRules
from shoal.params import ParamSpec
from shoal.runtime import History
from shoal.runtime.simulation import Callback
from shoal.secagg import SecureAggregation
from shoal.strategy.base import Strategy
from shoal.strategy.fedbuff import FedBuff
from shoal.transforms.base import UpdateTransform

log = logging.getLogger("shoal.server")


def upload_rules(
    cfg: cfgmod.RunConfig,
    strategy: Strategy,
    transforms: Sequence[UpdateTransform],
    sizes: Iterable[int] | None,
    num_params: int,
) -> UploadRules:
    """How the server judges a device's upload in this run: the config's result limits,
    and the strategy's vectors checked at upload unless a transform rewrites them on the
    device (half precision, masks), where the round loop checks them after the server
    halves instead, as in simulation."""
    return UploadRules(
        limits=cfg.strategy.limits(sizes),
        num_params=num_params,
        payload_keys=strategy.payload_keys,
        check_payload=all(t.keeps_payload_layout() for t in transforms),
        payload_bytes=max((t.payload_bytes(num_params) or 0 for t in transforms), default=0) or None,
    )


def serve(
    cfg: cfgmod.RunConfig,
    out_dir: Path,
    address: str,
    tls: TLSFiles | None,
    *,
    insecure: bool = False,
    round_timeout_s: float = 60.0,
    min_clients: int | None = None,
    join_timeout_s: float = 300.0,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    tokens: Mapping[str, str] | None = None,
    partition: bool = False,
    dashboard: DashboardSpec | None = None,
    keyholder_token: str | None = None,
    keyholder_tls: ClientTLS | None = None,
) -> History:
    """Run ``cfg`` with remote devices; checkpoints every round into ``out_dir``.
    ``partition``: an experiment over the config's dataset cut into clients (see above).
    ``keyholder_token``, ``keyholder_tls``: how the server reaches ``shoal keyholder``
    (homomorphic aggregation)."""
    refuse_unsupported(cfg)
    data: FederatedDataset | ServerData
    if partition:  # the central test set, the shapes, the enrolled client ids
        data = experiment.load_data(cfg)
        sizes: list[int] | None = list(data.sizes().values())
        enrolled: list[str] | None = list(data.client_ids)
    else:
        data, sizes, enrolled = experiment.server_data(cfg), None, None
    model = experiment.model_factory(cfg, data)
    strategy = cfg.strategy.build(cfg.trainer.local_epochs)
    transforms = experiment.build_transforms(cfg, experiment.population(data), model)
    spec = ParamSpec.from_module(model())
    wanted = _cohort(cfg, data, min_clients)
    commit_fraction = experiment.over_select(strategy, wanted, cfg.strategy.over_selection)
    buffer = strategy.buffer_size if isinstance(strategy, FedBuff) else None  # asynchronous rounds
    if cfg.strategy.deadline_s is not None:  # the config's deadline is the round's, in wall time
        round_timeout_s = cfg.strategy.deadline_s
    rules = upload_rules(cfg, strategy, transforms, sizes, spec.num_params)
    out_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(out_dir / "server.sqlite")
    backend = GrpcBackend(
        round_timeout_s=round_timeout_s,
        expected_clients=enrolled,
        rules=rules,
        model_hash=spec.digest(),
        run_id=out_dir.name,
        tokens=tokens,
        registry=registry,
        commit_fraction=commit_fraction,
        buffer_size=buffer,
    )
    keyholder = None
    for t in transforms:  # secure aggregation reaches the devices through the backend
        if isinstance(t, SecureAggregation):
            t.channel = NetworkChannel(backend, timeout_s=min(30.0, round_timeout_s))
        if isinstance(t, HomomorphicAggregation):  # and CKKS's sums the key holder
            assert cfg.he.keyholder is not None and cfg.he.public_key is not None  # refuse_unsupported
            keyholder = RemoteKeyAuthority(
                cfg.he.keyholder, cfg.he.public_key, keyholder_token, keyholder_tls
            )
            t.authority = keyholder
    server = start_server(backend, address, tls, insecure)
    board = None
    if dashboard is not None:  # the run folder's page, with who is connected now
        board = dashboard.start(out_dir, lambda: {"devices_connected": len(backend.available() or ())})
    if not resume:
        (out_dir / "config.toml").write_text(cfgmod.to_toml(cfg))
        (out_dir / "metrics.jsonl").write_text("")
    try:
        sim = experiment.build(
            cfg,
            out_dir,
            data=data,
            strategy=strategy,
            transforms=transforms,
            backend=backend,
            resuming=resume,
        )
        if resume:
            sim.resume()
        # A run whose rounds are all done (killed after its last checkpoint, before the model
        # was saved) finishes at once: its devices may have left for good.
        if sim.round < cfg.rounds and not sim.stop_reason():
            need = min_clients or wanted
            log.info("listening on %s; waiting for %d devices", address, need)
            joined = backend.wait_for_clients(need, join_timeout_s)
            if len(joined) < need:
                raise ConfigError(f"only {len(joined)} of {need} devices joined within {join_timeout_s:g} s")
        history = sim.run(cfg.rounds, [registry.round_finished, *callbacks])
        return experiment.finish(sim, history, cfg, out_dir)
    finally:
        backend.close()
        backend.wait_until_told(timeout_s=15.0)  # devices in backoff still learn that the run ended
        server.stop(grace=2.0)
        registry.close()
        if board is not None:
            board.stop()
        if keyholder is not None:
            keyholder.close()


def _cohort(cfg: cfgmod.RunConfig, data: FederatedDataset | ServerData, min_clients: int | None) -> int:
    """Devices a round picks, as far as the server can tell before any joins."""
    if isinstance(data, FederatedDataset):
        return cfg.strategy.num_to_select(len(data))
    if cfg.strategy.fraction is None:
        return cfg.strategy.clients_per_round
    if min_clients is None:  # a share of a population nobody has counted yet
        raise ConfigError(
            "strategy.fraction picks a share of the devices that join; say how many to wait for "
            "before round 1 with --min-clients, or set clients_per_round instead"
        )
    return max(round(cfg.strategy.fraction * min_clients), 1)
