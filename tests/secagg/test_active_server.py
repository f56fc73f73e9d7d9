"""Against an active server: the threshold bound and the ConsistencyCheck (Bonawitz et al. 2017)."""

from __future__ import annotations

import numpy as np
import pytest

from shoal.secagg import (
    LocalDevices,
    ProtocolError,
    SecAggClient,
    SecAggServer,
    complete_graph,
    harary_graph,
    secagg_plus_degree,
    threshold_for,
)
from shoal.secagg.common import consistency_statement
from shoal.secagg.wire import Consistency, Unmask, read_signed, read_unmasked

D = 16


def _masked_round(graph, t):
    """Stages 0-2 run honestly; returns the channel and index -> device."""
    ids = [f"c{i}" for i in range(len(graph))]
    channel = LocalDevices({cid: SecAggClient() for cid in ids})
    SecAggServer(1, ids, t, D, graph, channel).setup()
    for cid in ids:
        channel.devices[cid].masked_input(np.zeros(D, np.uint32))
    return {i + 1: channel.devices[cid] for i, cid in enumerate(ids)}


def split_view_attack(graph, victim, says_survived, corrupt):
    """The server tells the clients in ``says_survived`` (and the victim) that the victim is
    in U3 and everyone else that it dropped, so that the first reveal shares of its seed b
    and the rest shares of its key s. Corrupt clients (colluding with the server) sign both
    views and hand over both shares. Every signature that verifies on a view is forwarded.
    Returns the victim's b-shares and s-shares the server obtains, and the refusals."""
    t = threshold_for(min(len(v) for v in graph.values()), 2 / 3)
    devices = _masked_round(graph, t)
    everyone = tuple(sorted(graph))
    views = {True: everyone, False: tuple(i for i in everyone if i != victim)}
    heard = {i: i in says_survived or i == victim for i in everyone}
    signed: dict[bool, dict[int, bytes]] = {True: {}, False: {}}
    for i in everyone:
        state = devices[i]._r  # a corrupt device hands the server its secrets
        if i in corrupt:
            for view in (True, False):
                signed[view][i] = state.d.sign(consistency_statement(1, views[view]))
        else:
            answer = devices[i].handle(Consistency(views[heard[i]]).pack())
            signed[heard[i]][i] = read_signed(answer).signature
    b_shares, s_shares, refusals = [], [], []
    for i in graph[victim]:
        if i in corrupt:
            s_y, b_y = devices[i]._r.held[victim]
            s_shares.append((i, s_y))
            b_shares.append((i, b_y))
            continue
        proof = {v: sig for v, sig in signed[heard[i]].items() if v in graph[i]}
        try:
            f = read_unmasked(devices[i].handle(Unmask(views[heard[i]], proof).pack()))
        except ProtocolError as exc:
            refusals.append(str(exc))
            continue
        b_shares += [(i, f.b[victim])] if victim in f.b else []
        s_shares += [(i, f.s[victim])] if victim in f.s else []
    return b_shares, s_shares, refusals, t


@pytest.mark.parametrize("told_survived", range(6))
def test_the_split_view_attack_is_refused_by_the_consistency_check(told_survived):
    graph = complete_graph(7)  # k = 6, t = 5; one corrupt client (< k/3), the victim is 7
    honest = [1, 2, 3, 4, 5]
    b, s, refusals, t = split_view_attack(graph, 7, set(honest[:told_survived]), corrupt={6})
    assert not (len(b) >= t and len(s) >= t)  # never both of the victim's secrets
    if 0 < told_survived < 5:  # two views: those in the smaller one lack t signatures
        assert refusals and all("signed this U3" in r for r in refusals)


@pytest.mark.parametrize("split", [0.25, 0.5, 0.75])
def test_the_split_view_attack_fails_per_neighbourhood_in_secagg_plus(split):
    n = 20
    graph = harary_graph(n, secagg_plus_degree(n), seed=1)
    victim = 1
    near = list(graph[victim])
    corrupt = set(near[:3])  # fewer than k/3 of the victim's neighbours
    honest = [v for v in near if v not in corrupt]
    far = [v for v in graph if v not in near and v != victim]  # told whatever helps: here "survived"
    says = set(honest[: int(split * len(honest))]) | set(far)
    b, s, refusals, t = split_view_attack(graph, victim, says, corrupt)
    assert not (len(b) >= t and len(s) >= t) and refusals


def test_a_client_reveals_nothing_without_t_valid_signatures_on_its_u3():
    graph = complete_graph(6)  # k = 5, t = 4
    devices = _masked_round(graph, 4)
    view = tuple(graph)
    sigs = {i: read_signed(d.handle(Consistency(view).pack())).signature for i, d in devices.items()}
    me = devices[1]
    with pytest.raises(ProtocolError, match="out of order"):  # a client signs one U3, once
        me.handle(Consistency(view[1:]).pack())
    forged = {**{v: sigs[v] for v in (2, 3, 4)}, 5: sigs[2]}  # 5's "signature" is 2's
    with pytest.raises(ProtocolError, match="does not verify"):
        me.handle(Unmask(view, forged).pack())
    # a refusal spends nothing: given t genuine signatures, the same client answers
    with pytest.raises(ProtocolError, match="3 neighbours signed"):
        me.handle(Unmask(view, {v: sigs[v] for v in (2, 3, 4)}).pack())
    answer = read_unmasked(me.handle(Unmask(view, {v: sigs[v] for v in (2, 3, 4, 5)}).pack()))
    assert set(answer.b) == {2, 3, 4, 5, 6} and not answer.s
