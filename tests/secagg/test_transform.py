"""Secure aggregation inside federated training: same model, and the server never sees an update."""

from __future__ import annotations

import numpy as np
import pytest

import shoal
from shoal import config as c
from shoal.errors import ConfigError
from shoal.messages import TrainResult
from shoal.secagg import SecureAggregation, Stage
from shoal.secagg.crypto import encode
from shoal.secagg.transform import MASKED
from shoal.secagg.wire import unpack
from shoal.strategy import mean

TRAINER = shoal.TorchTrainer(lr=0.3, local_epochs=2, batch_size=16)


def _fedavg():
    return shoal.FedAvg(clients_per_round=8, aggregator=mean)  # SecAgg averages uniformly


@pytest.mark.parametrize("plus", [False, True])
def test_training_with_secure_aggregation_matches_training_without(fed_digits, small_mlp, plus):
    plain = shoal.simulate(small_mlp, fed_digits, _fedavg(), TRAINER, rounds=3)
    secure = shoal.simulate(
        small_mlp,
        fed_digits,
        _fedavg(),
        TRAINER,
        rounds=3,
        transforms=[SecureAggregation(bound=4.0, plus=plus)],
    )
    # fixed point at scale 2^27 for 8 clients: each coordinate within 8 / 2^27 of the float sum
    np.testing.assert_allclose(secure.params, plain.params, atol=1e-5)
    assert secure.final_accuracy == pytest.approx(plain.final_accuracy, abs=0.01)
    assert secure.records[-1]["clients_completed"] == 8


class Spy(SecureAggregation):
    """Records what each client computed (device side) and everything the server got."""

    def __init__(self) -> None:
        super().__init__(bound=4.0)
        self.plain: dict[tuple[int, str], np.ndarray] = {}
        self.server_saw: list[TrainResult] = []
        self.logs: list[list[tuple[str, bytes]]] = []

    def client_apply(self, result, ctx):
        self.plain[(ctx.round, result.client_id)] = result.payload["delta"].copy()
        return super().client_apply(result, ctx)

    def server_apply(self, results, ctx):
        self.server_saw += list(results)
        server = self._server
        out = super().server_apply(results, ctx)
        self.logs.append(server.log)
        return out


def test_the_server_never_holds_an_individual_plain_update(fed_digits, small_mlp):
    spy = Spy()
    shoal.simulate(small_mlp, fed_digits, _fedavg(), TRAINER, rounds=2, transforms=[spy])
    assert spy.server_saw and all(set(r.payload) == {MASKED} for r in spy.server_saw)
    received = [m for log in spy.logs for _, m in log] + [r.payload[MASKED].tobytes() for r in spy.server_saw]
    scale = 2.0**27
    for delta in spy.plain.values():
        as_float = delta.tobytes()[:64]
        as_ring = encode(delta, 4.0, scale).tobytes()[:64]
        assert not any(as_float in m or as_ring in m for m in received)
    for r in spy.server_saw:  # and every masked vector differs from every plain one
        _, y = unpack(r.payload[MASKED].tobytes(), "masked")
        assert all(np.mean(y == encode(d, 4.0, scale)) < 0.01 for d in spy.plain.values())


def test_too_many_dropouts_abort_the_round_and_the_next_one_proceeds(fed_digits, small_mlp):
    secagg = SecureAggregation(bound=4.0)
    sim = shoal.Simulation(small_mlp, fed_digits, _fedavg(), TRAINER, transforms=[secagg])
    before = sim.params.copy()
    secagg.channel.vanish = {str(i): Stage.UNMASK for i in range(20)}  # nobody answers at unmasking
    record = sim.step(last=2)
    assert record["aborted"] and "threshold" in record["failures"][0]
    assert np.array_equal(sim.params, before)
    secagg.channel.vanish = {str(i): Stage.ADVERTISE for i in range(20) if i % 10}  # 18 gone before keys
    assert sim.step(last=3)["aborted"]
    secagg.channel.vanish = {}
    record = sim.step(last=3)
    assert not record["aborted"] and record["clients_completed"] == 8
    assert not np.array_equal(sim.params, before)


def test_config_selects_secure_aggregation_and_refuses_what_cannot_combine():
    cfg = c.from_dict({"secagg": {"mode": "secagg+", "bound": 2.0}, "backend": "inprocess"})
    assert cfg.secagg.build().plus
    with pytest.raises(ConfigError, match="ray"):
        c.from_dict({"secagg": {"mode": "secagg"}, "backend": "ray"})
    with pytest.raises(ConfigError, match="central"):
        c.from_dict({"secagg": {"mode": "secagg"}, "privacy": {"mode": "central"}})
    with pytest.raises(ConfigError, match="half-precision"):
        c.from_dict({"secagg": {"mode": "secagg"}, "transforms": ["half-precision"]})
    with pytest.raises(ConfigError, match="choose one of"):
        c.from_dict({"secagg": {"mode": "secagg"}, "he": {"enabled": True}})
    with pytest.raises(ConfigError, match="scaffold"):
        c.from_dict({"he": {"enabled": True}, "strategy": {"name": "scaffold"}})
