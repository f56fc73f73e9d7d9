"""Cost of secure aggregation: client and server time, bytes per client, against plain FedAvg.

For n clients with d-dimensional updates, one round of the real protocol (shoal.secagg)
runs in this process: every device's half and the server, over the in-process channel
that carries the exact bytes a network would, all five rounds (Round 3 is the
ConsistencyCheck: one Ed25519 signature per client, t verified by each). SecAgg masks every
pair of clients; SecAgg+ only pairs along a random regular graph of degree ~3 log2 n. The
threshold is the active-server bound, t = floor(2k/3) + 1 of k neighbours (Bonawitz et al.
2017, Section 6). With 10% dropouts the dropped
clients vanish after sharing their keys, before sending their input: the costly case,
where the server rebuilds their keys and removes their masks from everyone else's input.

    .venv/bin/python bench/secagg.py [--sizes 10,50,100,200] [--dimension 100000]

Plain FedAvg's cost is the float32 update up (4 d bytes per client) and a sum on the server.
Client time is the mean per client (all five stages, its masked input included); server
time is the rest of the round's wall time (routing, summing, rebuilding, unmasking).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from shoal.secagg import (
    ACTIVE_BOUND,
    LocalDevices,
    SecAggClient,
    SecAggServer,
    Stage,
    complete_graph,
    harary_graph,
    secagg_plus_degree,
    threshold_for,
)
from shoal.secagg.crypto import fixed_point_scale


class Metered(LocalDevices):
    """The in-process channel, timing each device and counting its bytes both ways."""

    def __init__(self, devices: dict[str, SecAggClient], vanish: dict[str, Stage]) -> None:
        super().__init__(devices, vanish)
        self.seconds = {cid: 0.0 for cid in devices}
        self.bytes = {cid: 0 for cid in devices}

    def call(self, client_id: str, message: bytes) -> bytes | None:
        start = time.perf_counter()
        answer = super().call(client_id, message)
        self.seconds[client_id] += time.perf_counter() - start
        self.bytes[client_id] += len(message) + len(answer or b"")
        return answer


def one_round(n: int, d: int, plus: bool, dropout: float, seed: int = 0) -> dict[str, float]:
    ids = [f"c{i}" for i in range(n)]
    rng = np.random.default_rng(seed)
    dropped = set(rng.choice(ids, size=math.floor(dropout * n), replace=False).tolist()) if dropout else set()
    channel = Metered({cid: SecAggClient() for cid in ids}, {cid: Stage.MASKED for cid in dropped})
    graph = harary_graph(n, secagg_plus_degree(n), seed) if plus else complete_graph(n)
    degree = min(len(v) for v in graph.values())
    t = threshold_for(degree, ACTIVE_BOUND)
    server = SecAggServer(1, ids, t, d, graph, channel, 1.0, fixed_point_scale(n, 1.0))
    updates = {cid: rng.uniform(-0.01, 0.01, d).astype(np.float32) for cid in ids}
    start = time.perf_counter()
    server.setup()
    masked = {}
    for cid in ids:
        if cid in dropped:
            continue
        t0 = time.perf_counter()
        masked[cid] = channel.devices[cid].masked_input(updates[cid])
        channel.seconds[cid] += time.perf_counter() - t0
        channel.bytes[cid] += len(masked[cid])
    total = server.aggregate(masked)
    wall = time.perf_counter() - start
    client_time = sum(channel.seconds.values())
    alive = [cid for cid in ids if cid not in dropped]
    assert len(server.survivors_of_input) == len(alive) and total.shape == (d,)
    return {
        "degree": degree,
        "client_s": float(np.mean([channel.seconds[c] for c in alive])),
        "server_s": wall - client_time,
        "bytes_per_client": float(np.mean([channel.bytes[c] for c in alive])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,50,100,200")
    ap.add_argument("--dimension", type=int, default=100_000)
    args = ap.parse_args()
    d = args.dimension
    plain_bytes = 4 * d
    print(f"d = {d:,}; plain FedAvg sends {plain_bytes / 1e6:.2f} MB up per client\n")
    print("| n | protocol | dropout | degree | client s | server s | MB per client | x plain bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for n in [int(v) for v in args.sizes.split(",")]:
        for plus in (False, True):
            for dropout in (0.0, 0.1):
                m = one_round(n, d, plus, dropout)
                name = "SecAgg+" if plus else "SecAgg"
                print(
                    f"| {n} | {name} | {dropout:.0%} | {m['degree']} | {m['client_s']:.3f} | "
                    f"{m['server_s']:.3f} | {m['bytes_per_client'] / 1e6:.3f} | "
                    f"{m['bytes_per_client'] / plain_bytes:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
