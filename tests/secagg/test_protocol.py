"""The secure-aggregation protocol, exactly: sums, dropouts at every stage, what the server sees."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from shoal.errors import WireFormatError
from shoal.secagg import (
    ACTIVE_BOUND,
    LocalDevices,
    ProtocolError,
    SecAggClient,
    SecAggServer,
    Stage,
    ThresholdError,
    complete_graph,
    harary_graph,
    secagg_plus_degree,
    shamir,
    threshold_for,
)
from shoal.secagg.crypto import decode, encode, fixed_point_scale, mask
from shoal.secagg.wire import Consistency, Unmask, pack, unpack

D = 64


def run_round(n, t, vanish, graph=None, dimension=D, seed=0):
    """One round where client ``i`` vanishes from stage ``vanish[i]`` on (None: stays).
    Returns (the server's sum, the plain sum over the inputs it says it covers, the server,
    the inputs)."""
    ids = [f"c{i}" for i in range(n)]
    channel = LocalDevices(
        {cid: SecAggClient() for cid in ids},
        {cid: s for cid, s in zip(ids, vanish, strict=True) if s is not None},
    )
    rng = np.random.default_rng(seed)
    inputs = {cid: rng.integers(0, 2**32, dimension, dtype=np.uint64).astype(np.uint32) for cid in ids}
    server = SecAggServer(1, ids, t, dimension, graph or complete_graph(n), channel)
    server.setup()
    masked = {}
    for cid in ids:
        if not channel.gone(cid, Stage.MASKED):
            with contextlib.suppress(ProtocolError):  # it never got its shares (left during delivery)
                masked[cid] = channel.devices[cid].masked_input(inputs[cid])
    total = server.aggregate(masked)
    plain = np.zeros(dimension, np.uint32)
    for cid in server.survivors_of_input:
        plain += inputs[cid]
    return total, plain, server, inputs


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_the_sum_is_exact_for_every_dropout_pattern_within_the_threshold(data):
    n = data.draw(st.integers(3, 8), label="clients")
    t = data.draw(st.integers(2 * (n - 1) // 3 + 1, n - 1), label="threshold")  # t > 2k/3, k = n - 1
    stages = st.one_of(st.none(), st.sampled_from(list(Stage)))
    vanish = data.draw(st.lists(stages, min_size=n, max_size=n), label="vanish")
    stays = sum(v is None for v in vanish)  # clients that answer every stage
    # a secret needs t shares held by *other* clients: t + 1 must see the round through
    if stays >= t + 1:
        total, plain, server, _ = run_round(n, t, vanish)
        assert np.array_equal(total, plain)  # exact, mod 2^32
        assert set(server.survivors_of_input) >= {f"c{i}" for i, v in enumerate(vanish) if v is None}
    else:
        with pytest.raises(ThresholdError, match="threshold"):
            run_round(n, t, vanish)


@pytest.mark.parametrize("stage", list(Stage))
def test_each_stage_survives_its_dropouts_and_aborts_beyond(stage):
    n, t = 8, 5
    ok = [stage] * (n - t - 1) + [None] * (t + 1)
    total, plain, _, _ = run_round(n, t, ok)
    assert np.array_equal(total, plain)
    with pytest.raises(ThresholdError):
        run_round(n, t, [stage] * (n - t) + [None] * t)


def test_secagg_plus_sums_exactly_over_a_log_degree_graph():
    n = 40
    degree = secagg_plus_degree(n)
    graph = harary_graph(n, degree, seed=3)
    assert degree < n - 1 and all(len(v) == degree for v in graph.values())
    assert all(u in graph[v] for u in graph for v in graph[u])  # undirected
    vanish = [Stage.MASKED, Stage.UNMASK] + [None] * (n - 2)
    total, plain, server, _ = run_round(n, threshold_for(degree, ACTIVE_BOUND), vanish, graph=graph)
    assert np.array_equal(total, plain) and len(server.survivors_of_input) == n - 1


def test_masked_inputs_look_uniform_and_never_equal_an_input():
    _, _, server, inputs = run_round(6, 4, [None] * 6, dimension=4096)
    for cid, message in server.log:
        try:
            _, y = unpack(message, "masked")
        except WireFormatError:
            continue  # a key-stage message
        assert not np.array_equal(y, inputs[cid])
        top = (y >> 24).astype(np.int64)  # the top byte of a uniform uint32 is uniform
        assert stats.chisquare(np.bincount(top, minlength=256)).pvalue > 1e-4
        low = (y & 0xFF).astype(np.int64)
        assert stats.chisquare(np.bincount(low, minlength=256)).pvalue > 1e-4


def test_seeds_that_agree_on_32_bits_give_unrelated_masks():
    a = bytes(4) + bytes(range(1, 29))
    b = bytes(4) + bytes(range(2, 30))
    ma, mb = mask(a, 10_000), mask(b, 10_000)
    assert np.mean(ma == mb) < 0.001
    assert abs(np.corrcoef(ma.astype(np.float64), mb.astype(np.float64))[0, 1]) < 0.05


def test_shamir_needs_exactly_the_threshold():
    secret = bytes(range(32))
    shares = shamir.split(secret, 3, [5, 9, 11, 20])
    assert shamir.reconstruct(shares[1:], 32) == secret
    assert shamir.reconstruct([shares[0], shares[3], shares[2]], 32) == secret
    with pytest.raises(ValueError):
        shamir.reconstruct(shares[:2], 32)  # two points of a degree-2 polynomial: no secret
    with pytest.raises(ValueError, match="distinct"):
        shamir.split(secret, 2, [1, 1, 2])


def test_fixed_point_never_wraps_for_n_clients_at_the_bound():
    n, bound = 200, 3.0
    scale = fixed_point_scale(n, bound)
    total = np.zeros(4, np.uint32)
    for _ in range(n):
        total += encode(np.array([bound, -bound, 10 * bound, 0.1]), bound, scale)  # 10B is clamped to B
    np.testing.assert_allclose(decode(total, scale), [n * bound, -n * bound, n * bound, n * 0.1], rtol=1e-6)
    with pytest.raises(ValueError, match="overflow"):
        fixed_point_scale(2**31, 1.0)


def test_a_tampered_share_is_caught_by_its_recipient():
    ids = ["a", "b", "c", "d"]

    class Tamper(LocalDevices):
        def call(self, client_id, message):
            if client_id == "b" and b'"deliver"' in message:
                fields, _ = unpack(message, "deliver")
                sender, sealed = next(iter(fields["sealed"].items()))
                flipped = format(int(sealed[-1], 16) ^ 1, "x")  # one bit of the GCM tag
                fields["sealed"][sender] = sealed[:-1] + flipped
                message = pack("deliver", fields)
            return super().call(client_id, message)

    channel = Tamper({cid: SecAggClient() for cid in ids})
    server = SecAggServer(1, ids, 3, D, complete_graph(4), channel)
    server.setup()
    assert "b" not in [cid for cid, m in server.log if b'"ready"' in m]  # b refused the forged share


def test_a_client_never_reveals_both_secrets_of_one_peer():
    ids = ["a", "b", "c", "d"]
    channel = LocalDevices({cid: SecAggClient() for cid in ids})
    server = SecAggServer(1, ids, 3, D, complete_graph(4), channel)
    server.setup()
    a = channel.devices["a"]
    a.masked_input(np.zeros(D, np.uint32))
    a.handle(Consistency((1, 2, 3, 4)).pack())  # a signs "b (2) survived": it will reveal b's seed
    greedy = Unmask((1, 3, 4), {}).pack()  # ... and is then asked as if b dropped: its key
    with pytest.raises(ProtocolError, match="different U3"):
        a.handle(greedy)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_the_secagg_wire_format_refuses_garbage_cleanly(blob):
    for data in (blob, b"SAG1" + blob):
        with contextlib.suppress(WireFormatError):
            unpack(data, "masked")
