"""Secure aggregation inside federated training: same model, and the server never sees an update."""

from __future__ import annotations

import numpy as np
import pytest

import shoal
from shoal import config as c
from shoal.errors import ConfigError
from shoal.messages import TrainResult
from shoal.secagg import LocalDevices, SecureAggregation, Stage, shamir
from shoal.secagg.crypto import encode
from shoal.secagg.transform import MASKED
from shoal.secagg.wire import kind_of, pack, unpack
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


@pytest.mark.parametrize("cohort", [2, 3])
def test_secagg_plus_runs_a_round_of_two_or_three_devices_on_the_complete_graph(
    fed_digits, small_mlp, cohort
):
    # a fleet's round may hold only two devices: the graph of about 3 log2(n) rounds to the
    # complete one there, never to degree 0
    strategy = shoal.FedAvg(clients_per_round=cohort, aggregator=mean)
    plain = shoal.simulate(small_mlp, fed_digits, strategy, TRAINER, rounds=2)
    secure = shoal.simulate(
        small_mlp,
        fed_digits,
        strategy,
        TRAINER,
        rounds=2,
        transforms=[SecureAggregation(bound=4.0, plus=True)],
    )
    np.testing.assert_allclose(secure.params, plain.params, atol=1e-5)
    assert [r["secagg_degree"] for r in secure.records] == [cohort - 1] * 2


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
    with pytest.raises(ConfigError, match="compresses in its own ring"):
        c.from_dict({"secagg": {"mode": "secagg"}, "compression": {"uplink": "half"}})
    with pytest.raises(ConfigError, match="choose one of"):
        c.from_dict({"secagg": {"mode": "secagg"}, "he": {"enabled": True}})
    with pytest.raises(ConfigError, match="scaffold"):
        c.from_dict({"he": {"enabled": True}, "strategy": {"name": "scaffold"}})


class CorruptCohort(LocalDevices):
    """The in-process channel, but the answers of one kind from the first ``liars`` clients of
    each round's cohort are rewritten by ``edit(fields, vector) -> bytes``."""

    def __init__(self, kind, edit, liars=1):
        super().__init__()
        self.kind, self.edit, self.liars, self.edits = kind, edit, liars, 0

    def call(self, client_id, message):
        answer = super().call(client_id, message)
        hostile = client_id in sorted(self.devices)[: self.liars]
        if answer is not None and hostile and kind_of(answer) == self.kind:
            self.edits += 1
            return self.edit(*unpack(answer, self.kind))
        return answer


def _set(kind, name, value):
    return kind, lambda fields, vector: pack(kind, {**fields, name: value}, vector)


def _forge_b(fields, vector):
    """Add one to every share of a surviving neighbour's seed this client returns."""
    shift = {u: ((int(y, 16) + 1) % shamir.PRIME).to_bytes(66, "big").hex() for u, y in fields["b"].items()}
    return pack("unmasked", {**fields, "b": shift}, vector)


@pytest.mark.parametrize(
    ("kind", "edit", "completed"),
    [
        (*_set("unmasked", "s", ["not", "a", "mapping"]), 8),  # was an AttributeError out of simulate
        (*_set("unmasked", "b", {"2": "not hex"}), 8),
        (*_set("shares", "sealed", ["00"]), 7),
        (*_set("signed", "signature", "00" * 64), 8),
        ("unmasked", _forge_b, 8),  # one forged share of each seed: outvoted, the sum stays exact
    ],
    ids=["s-is-a-list", "b-not-hex", "sealed-is-a-list", "bad-signature", "forged-share"],
)
def test_one_hostile_device_in_a_simulation_costs_only_itself(fed_digits, small_mlp, kind, edit, completed):
    channel = CorruptCohort(kind, edit)
    secure = shoal.simulate(small_mlp, fed_digits, _fedavg(), TRAINER, rounds=2,
                            transforms=[SecureAggregation(bound=4.0, channel=channel)])  # fmt: skip
    assert channel.edits == 2  # one hostile answer a round
    assert all(not r["aborted"] and r["clients_completed"] == completed for r in secure.records)
    if completed == 8:  # every update is in the sum, exactly: the same model as without SecAgg
        plain = shoal.simulate(small_mlp, fed_digits, _fedavg(), TRAINER, rounds=2)
        np.testing.assert_allclose(secure.params, plain.params, atol=1e-5)


def test_forged_shares_that_cannot_be_outvoted_abort_the_round_and_keep_the_model(fed_digits, small_mlp):
    secagg = SecureAggregation(bound=4.0, channel=CorruptCohort("unmasked", _forge_b, liars=2))
    sim = shoal.Simulation(small_mlp, fed_digits, _fedavg(), TRAINER, transforms=[secagg])
    before = sim.params.copy()
    record = sim.step(last=1)
    assert record["aborted"] and "rebuild" in record["failures"][0]
    assert np.array_equal(sim.params, before)
