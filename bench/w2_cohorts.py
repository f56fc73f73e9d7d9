"""Workload W2: many small clients. Sequential floor vs shoal sequential vs shoal vectorized.

Fashion-MNIST, the 2NN (784-200-200-10), 1000 IID clients of 60 samples, 100 clients a
round, E=1, B=10, SGD lr 0.05, 5 rounds, no evaluation. The floor is the same 3,000
steps of batch 10 in one plain PyTorch loop. The three alternate (A B C A B C ...) and
the speedups reported are medians of ratios paired within each repeat.

    .venv/bin/python bench/w2_cohorts.py [--repeats 3] [--cohort-size 100]

Without the Debian package dataset-fashion-mnist it uses random images of the same
shape, and says so.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import fmnist_or_random, plain_loop

import shoal
from shoal.data import LabeledData, iid
from shoal.models import mcmahan_2nn
from shoal.runtime.vectorized import VectorizedBackend

ROUNDS, CLIENTS, PER_ROUND, SAMPLES, BATCH, LR = 5, 1000, 100, 60, 10, 0.05


def floor(data: LabeledData, seed: int) -> float:
    return plain_loop(mcmahan_2nn, data, ROUNDS * PER_ROUND, SAMPLES, BATCH, LR, seed)


def run_shoal(fed: shoal.data.FederatedDataset, seed: int, vectorized: bool, cohort: int) -> float:
    trainer = shoal.TorchTrainer(lr=LR, local_epochs=1, batch_size=BATCH)
    start = time.perf_counter()
    backend = VectorizedBackend(trainer, mcmahan_2nn, fed, cohort_size=cohort) if vectorized else None
    shoal.simulate(
        mcmahan_2nn,
        fed,
        shoal.FedAvg(clients_per_round=PER_ROUND),
        trainer,
        rounds=ROUNDS,
        seed=seed,
        eval_every=0,
        backend=backend,
    )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cohort-size", type=int, default=32)
    args = ap.parse_args()
    data = fmnist_or_random()
    fed = iid(LabeledData(data.name, data.train, None, 10), num_clients=CLIENTS, seed=0)
    print(
        f"W2: {CLIENTS} clients x {SAMPLES}, {PER_ROUND}/round, E=1, B={BATCH}, {ROUNDS} rounds, "
        f"2NN, cohort {args.cohort_size}, {torch.get_num_threads()} threads"
    )
    floor(data, 99)
    run_shoal(fed, 99, True, args.cohort_size)  # warm-up
    rows = []
    for i in range(args.repeats):
        f = floor(data, i)
        s = run_shoal(fed, i, False, args.cohort_size)
        v = run_shoal(fed, i, True, args.cohort_size)
        rows.append((f, s, v))
        print(f"repeat {i + 1}: floor {f:.2f} s  sequential {s:.2f} s  vectorized {v:.2f} s", flush=True)
    med = [statistics.median(c) for c in zip(*rows, strict=True)]
    print(
        f"floor (median): {med[0]:.2f} s\nshoal sequential (median): {med[1]:.2f} s\n"
        f"shoal vectorized (median): {med[2]:.2f} s"
    )
    print(f"sequential / floor: {statistics.median(s / f for f, s, _ in rows):.3f}")
    speedup = statistics.median(f / v for f, _, v in rows)
    print(f"speedup: {speedup:.2f}  (vectorized over the floor; target >= 3)")


if __name__ == "__main__":
    main()
