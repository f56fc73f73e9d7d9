"""The threshold bound Bonawitz et al. 2017 prove for an active server (t > 2k/3) is enforced
by the config, the server and, whatever the server sends, every client."""

from __future__ import annotations

import pytest

from shoal.errors import ConfigError
from shoal.secagg import (
    LocalDevices,
    ProtocolError,
    SecAggClient,
    SecAggServer,
    SecureAggregation,
    complete_graph,
    threshold_for,
)
from shoal.secagg.wire import Setup

D = 16


def test_a_threshold_below_the_proven_bound_is_refused_everywhere():
    with pytest.raises(ConfigError, match=r"2/3.*t > 2k/3"):
        SecureAggregation(threshold=0.5)
    with pytest.raises(ConfigError, match=r"2/3"):
        SecureAggregation(threshold=0.66)
    assert SecureAggregation().threshold >= 2 / 3 and SecureAggregation(threshold=0.75)
    ids = [f"c{i}" for i in range(7)]  # k = 6 neighbours: t must be at least 5
    with pytest.raises(ConfigError, match=r"2k/3 < t <= k"):
        SecAggServer(1, ids, 4, D, complete_graph(7), LocalDevices())
    # a client refuses it too, whatever the server sends: the server is the adversary here
    low = Setup(1, 1, 4, D, (2, 3, 4, 5, 6, 7), 1.0, 1.0).pack()
    with pytest.raises(ProtocolError, match=r"t > 2k/3"):
        SecAggClient().handle(low)
    assert threshold_for(6, 2 / 3) == 5 and threshold_for(9, 2 / 3) == 7 and threshold_for(3, 0.99) == 3
