"""Distributed DP in the SecAgg ring (the Skellam mechanism): rotation, unbiasedness, the
accounting against a hand computation of the paper's bound, the noise the server's sum
holds, refusals, resume, and a federated run."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant

import shoal
from shoal import config as c
from shoal import experiment
from shoal.errors import CheckpointError, ConfigError
from shoal.privacy.distributed import DistributedDP
from shoal.privacy.rotation import hadamard, padded_size, rotate, unrotate
from shoal.privacy.skellam import ORDERS
from shoal.secagg import LocalDevices, ProtocolError, SecAggClient, SecAggServer, SecureAggregation, Stage
from shoal.secagg import complete_graph as graph_of
from shoal.secagg.crypto import signed
from shoal.secagg.encoding import Ring
from shoal.strategy import mean
from shoal.transforms.base import TransformContext

TRAINER = shoal.TorchTrainer(lr=0.3, local_epochs=2, batch_size=16)


def test_the_rotation_is_orthogonal_and_inverts():
    d = 11
    size = padded_size(d)
    assert size == 16 and padded_size(16) == 16 and padded_size(17) == 32
    columns = np.stack([rotate(np.eye(d)[i], seed=7) for i in range(d)], axis=1)  # (16, 11)
    np.testing.assert_allclose(columns.T @ columns, np.eye(d), atol=1e-12)
    x = np.random.default_rng(0).normal(size=d)
    np.testing.assert_allclose(unrotate(rotate(x, 7), 7, d), x, atol=1e-12)
    np.testing.assert_allclose(hadamard(hadamard(np.arange(8.0))), np.arange(8.0), atol=1e-12)
    assert not np.allclose(rotate(x, 7), rotate(x, 8))  # the round's seed picks the signs


def _ring_sum(encoded, bits):
    total = np.zeros_like(encoded[0], dtype=np.uint64)
    for e in encoded:
        total += e
    return (total % 2**bits).astype(np.uint32)


def test_the_decoded_mean_of_many_noisy_rounds_is_unbiased():
    n, d, bits, rounds = 4, 10, 16, 400
    dp = DistributedDP(noise_multiplier=1.0, clip_norm=1.0, min_clients=n, noise="seeded")
    updates = np.random.default_rng(1).uniform(-0.3, 0.3, (n, d))  # norms below the clip norm
    assert (np.linalg.norm(updates, axis=1) < 1).all()
    gamma = dp.scale(n, bits, d)
    total = np.zeros(d)
    for r in range(1, rounds + 1):
        ctx, ring = TransformContext(r, 0, d), Ring(bits, gamma)
        encoded = [dp.encode(u, ring, ctx, str(i)) for i, u in enumerate(updates)]
        total += dp.decode(_ring_sum(encoded, bits), n, ring, ctx)
    # a round's mean has noise of std z c / n = 0.25 a coordinate (plus rounding, 1 / (n gamma)
    # at most): over 400 rounds the average is within 5 x 0.25 / 20 of the true mean
    np.testing.assert_allclose(total / rounds, updates.mean(axis=0), atol=5 * 0.25 / math.sqrt(rounds))


def _hand_epsilon(z, clip, gamma, dim, beta, clients, min_clients, rounds, delta):
    """Agarwal et al. 2021's Skellam RDP written out, and RDP -> (eps, delta) by Canonne,
    Kamath, Steinke 2020 (Prop. 12), over the same integer orders."""
    g = clip * gamma
    l2 = min(
        g + math.sqrt(dim),
        math.sqrt(g**2 + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (g + math.sqrt(dim) / 2)),
    )
    l1 = l2 * min(math.sqrt(dim), l2)
    mu = clients * (z * clip * gamma) ** 2 / min_clients
    best = math.inf
    for a in ORDERS:
        rdp = rounds * (
            a * l2**2 / (2 * mu) + min(((2 * a - 1) * l2**2 + 6 * l1) / (4 * mu**2), 3 * l1 / (2 * mu))
        )
        best = min(best, rdp + math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1))
    return best


@pytest.mark.parametrize(
    ("z", "bits", "clients", "min_clients", "rounds"),
    [(1.0, 16, 10, 8, 50), (0.7, 12, 100, 60, 200)],
)
def test_the_accounted_epsilon_is_the_papers_bound_by_hand(z, bits, clients, min_clients, rounds):
    dim, delta = 2000, 1e-5
    dp = DistributedDP(noise_multiplier=z, clip_norm=0.5, min_clients=min_clients, delta=delta)
    gamma = dp.scale(clients, bits, dim)
    ctx, ring = TransformContext(1, 0, dim), Ring(bits, gamma)
    for _ in range(rounds):
        dp.decode(np.zeros(padded_size(dim), np.uint32), clients, ring, ctx)
    hand = _hand_epsilon(z, 0.5, gamma, padded_size(dim), dp.beta, clients, min_clients, rounds, delta)
    assert dp.epsilon == pytest.approx(hand, rel=1e-9)
    # more survivors than min_clients bring more noise, so less epsilon than the minimum would
    assert dp.epsilon < _hand_epsilon(
        z, 0.5, gamma, padded_size(dim), dp.beta, min_clients, min_clients, rounds, delta
    )


def test_at_a_fine_grid_the_skellam_bound_meets_the_gaussians():
    z, rounds, delta = 1.2, 100, 1e-5
    dp = DistributedDP(noise_multiplier=z, clip_norm=1.0, min_clients=10, delta=delta)
    gamma = dp.scale(10, 32, 1000)
    for _ in range(rounds):
        dp.decode(np.zeros(1024, np.uint32), 10, Ring(32, gamma), TransformContext(1, 0, 1000))
    acc = rdp_privacy_accountant.RdpAccountant(ORDERS)
    acc.compose(dp_event.GaussianDpEvent(z), rounds)
    gaussian = acc.get_epsilon(delta)
    assert gaussian < dp.epsilon < gaussian * 1.01  # discreteness costs under 1% at 32 bits


def _noisy_round(dp, n, vanish, bits, num_params):
    """One protocol round of zero updates under distributed DP; returns (signed sum, survivors, gamma)."""
    ids = [f"c{i}" for i in range(n)]
    channel = LocalDevices({cid: SecAggClient() for cid in ids}, vanish)
    gamma = dp.scale(n, bits, num_params)
    dim = dp.dimension(num_params)
    server = SecAggServer(1, ids, 2 * (n - 1) // 3 + 1, dim, graph_of(n), channel, dp.bound, gamma, bits)
    server.setup()
    ctx = TransformContext(1, 0, num_params)
    masked = {}
    for cid in ids:
        if not channel.gone(cid, Stage.MASKED):
            with contextlib.suppress(ProtocolError):
                device = channel.devices[cid]
                ring = Ring(device.setup.ring_bits, device.setup.scale)
                masked[cid] = device.masked_input(dp.encode(np.zeros(num_params), ring, ctx, cid))
    total = server.aggregate(masked)
    return signed(total, bits), len(server.survivors_of_input), gamma


def test_the_servers_sum_holds_the_noise_variance_the_accountant_assumes():
    dp = DistributedDP(noise_multiplier=0.8, clip_norm=1.0, min_clients=5, noise="seeded")
    n, num_params = 8, 16_000  # D = 16,384 coordinates of pure noise (zeros round to zeros)
    total, survivors, gamma = _noisy_round(dp, n, {"c0": Stage.MASKED, "c5": Stage.MASKED}, 16, num_params)
    assert survivors == 6
    expected = survivors * dp._ledger.local_variance(gamma)  # what the ledger composes for 6 survivors
    # the sample variance of 16,384 draws is within 5 sqrt(2 / 16,384) = 5.5% of the true one
    assert total.var() == pytest.approx(expected, rel=0.055)
    assert abs(total.mean()) < 5 * math.sqrt(expected / total.size)


def _fedavg(k=8):
    return shoal.FedAvg(clients_per_round=k, aggregator=mean)


class TwoVanish(LocalDevices):
    """The in-process channel; while ``on``, two of each cohort leave before masking."""

    on = True

    def open_round(self, client_ids):
        super().open_round(client_ids)
        self.vanish = {cid: Stage.MASKED for cid in sorted(client_ids)[:2]} if self.on else {}


def test_a_sum_with_too_few_noised_clients_is_not_released(fed_digits, small_mlp):
    dp = DistributedDP(noise_multiplier=1.0, clip_norm=1.0, min_clients=7, noise="seeded")
    channel = TwoVanish()
    secagg = SecureAggregation(ring_bits=16, encoder=dp, channel=channel)
    sim = shoal.Simulation(small_mlp, fed_digits, _fedavg(), TRAINER, transforms=[secagg])
    before = sim.params.copy()
    record = sim.step(last=2)  # 6 of 8 survive: the protocol completes, the sum stays masked
    assert record["aborted"] and "min_clients" in " ".join(record["failures"])
    assert np.array_equal(sim.params, before) and dp._ledger.rounds_released == 0
    channel.on = False
    record = sim.step(last=2)
    assert not record["aborted"] and record["dp_noised_clients"] == 8
    assert record["dp_epsilon"] == pytest.approx(dp.epsilon) and dp._ledger.rounds_released == 1


def test_the_budget_stops_the_run_and_the_ledger_resumes(fed_digits, small_mlp):
    def make():
        return DistributedDP(
            noise_multiplier=1.0, clip_norm=1.0, min_clients=6, noise="seeded", target_epsilon=12
        )

    dp = make()
    history = shoal.simulate(small_mlp, fed_digits, _fedavg(), TRAINER, rounds=30,
                             transforms=[SecureAggregation(ring_bits=16, encoder=dp)])  # fmt: skip
    eps = [r["dp_epsilon"] for r in history.records if "dp_epsilon" in r]
    assert history.stopped and "privacy budget" in history.stopped and 1 < len(eps) < 30
    assert max(eps) <= 12 and eps == sorted(eps)
    resumed = make()
    resumed.load_state_dict(dp.state_dict())
    assert resumed.epsilon == dp.epsilon
    other = DistributedDP(noise_multiplier=2.0, clip_norm=1.0, min_clients=6)
    with pytest.raises(CheckpointError, match="noise_multiplier"):
        other.load_state_dict(dp.state_dict())


def test_config_wires_distributed_dp_and_refuses_it_without_secagg():
    with pytest.raises(ConfigError, match=r"secagg\.mode"):
        c.from_dict({"privacy": {"mode": "distributed"}})
    with pytest.raises(ConfigError, match="min_clients"):
        c.from_dict({"privacy": {"mode": "distributed", "min_clients": 20},
                     "secagg": {"mode": "secagg"}, "strategy": {"clients_per_round": 10}})  # fmt: skip
    with pytest.raises(ConfigError, match="ring_bits"):
        c.from_dict({"secagg": {"mode": "secagg", "ring_bits": 4}})


def test_a_federated_run_under_distributed_dp_trains():
    cfg = c.from_dict({
        "rounds": 8, "seed": 0, "backend": "inprocess",
        "data": {"dataset": "digits", "num_clients": 20},
        "model": {"name": "mlp", "hidden": [16]},
        "strategy": {"name": "fedavg", "clients_per_round": 20},
        "trainer": {"lr": 0.3, "local_epochs": 2, "batch_size": 16},
        "privacy": {"mode": "distributed", "noise_multiplier": 0.5, "clip_norm": 2.0,
                    "min_clients": 15, "noise": "seeded"},
        "secagg": {"mode": "secagg", "ring_bits": 16},
    })  # fmt: skip
    history = experiment.build(cfg, None).run(cfg.rounds)
    assert history.final_accuracy > 0.5  # chance is 0.1
    eps = history.series("dp_epsilon")
    assert len(eps) == 8 and 0 < eps[0][1] < eps[-1][1] < math.inf
