"""Cost of homomorphic aggregation (CKKS, TenSEAL): client and server time, bytes per client.

The same setting as bench/secagg.py: n clients with d-dimensional updates, one round,
measured through the real transform (shoal.he): each client encrypts its update under
the public context (4,096 values per ciphertext at poly_modulus_degree 8,192), the
server adds the ciphertexts, the key authority decrypts the sum. With 10% dropouts the
missing clients simply send nothing: CKKS needs no threshold and no extra round.

    .venv/bin/python bench/he.py [--sizes 10,50,100,200] [--dimension 100000]

Needs TenSEAL: pip install "shoal[he]".
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from shoal.he import HomomorphicAggregation, KeyAuthority
from shoal.he.ckks import CIPHERTEXT
from shoal.messages import TrainResult
from shoal.transforms.base import TransformContext


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,50,100,200")
    ap.add_argument("--dimension", type=int, default=100_000)
    args = ap.parse_args()
    d = args.dimension
    authority = KeyAuthority()
    he = HomomorphicAggregation(authority)
    ctx = TransformContext(1, 0, d)
    rng = np.random.default_rng(0)
    print(f"d = {d:,}; plain FedAvg sends {4 * d / 1e6:.2f} MB up per client\n")
    print("| n | dropout | client s (encrypt) | server s (add, decrypt) | MB/client | x plain | max error |")
    print("|---|---|---|---|---|---|---|")
    for n in [int(v) for v in args.sizes.split(",")]:
        for dropout in (0.0, 0.1):
            alive = n - math.floor(dropout * n)
            updates = [rng.uniform(-0.01, 0.01, d).astype(np.float32) for _ in range(alive)]
            start = time.perf_counter()
            sent = [
                he.client_apply(TrainResult(1, str(i), 1, {"delta": u}), ctx) for i, u in enumerate(updates)
            ]
            client = (time.perf_counter() - start) / alive
            start = time.perf_counter()
            (merged,) = he.server_apply(sent, ctx)
            server = time.perf_counter() - start
            size = float(np.mean([r.payload[CIPHERTEXT].size for r in sent]))
            error = float(np.abs(merged.payload["delta"] - np.mean(updates, axis=0)).max())
            print(
                f"| {n} | {dropout:.0%} | {client:.3f} | {server:.3f} | {size / 1e6:.2f} | "
                f"{size / (4 * d):.1f} | {error:.1e} |",
                flush=True,
            )
            del sent


if __name__ == "__main__":
    main()
