"""Workload W1: shoal's simulation overhead against the plain PyTorch floor.

Fashion-MNIST train set, 100 IID clients of 600 samples, 10 clients a round, 1 local epoch,
batch 32, SGD lr 0.05, McMahan et al.'s CNN (1,663,370 parameters), 5 rounds, no
evaluation. The floor is one plain PyTorch loop over the same 30,000 sample-steps, in the
same batch shapes (50 blocks of 600 samples in batches of 32), without federated
anything. The two alternate (floor, shoal, floor, shoal, ...) and the ratio reported is
the median of the paired ratios, since this machine's speed drifts between minutes.

    .venv/bin/python bench/w1_overhead.py [--repeats 3]

Without the Debian package dataset-fashion-mnist it uses random images of the same
shape, and says so: overhead does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import fmnist_or_random, plain_loop

import shoal
from shoal.data import LabeledData, iid
from shoal.models import mcmahan_cnn

ROUNDS, CLIENTS, PER_ROUND, SAMPLES, BATCH, LR = 5, 100, 10, 600, 32, 0.05


def floor(data: LabeledData, seed: int) -> float:
    return plain_loop(mcmahan_cnn, data, ROUNDS * PER_ROUND, SAMPLES, BATCH, LR, seed)


def run_shoal(fed: shoal.data.FederatedDataset, seed: int) -> float:
    start = time.perf_counter()
    shoal.simulate(
        mcmahan_cnn,
        fed,
        shoal.FedAvg(clients_per_round=PER_ROUND),
        shoal.TorchTrainer(lr=LR, local_epochs=1, batch_size=BATCH),
        rounds=ROUNDS,
        seed=seed,
        eval_every=0,
    )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="floor/shoal pairs to run (default 3)")
    args = ap.parse_args()
    data = fmnist_or_random()
    fed = iid(LabeledData(data.name, data.train, None, 10), num_clients=CLIENTS, seed=0)
    print(
        f"W1: {CLIENTS} clients x {SAMPLES}, {PER_ROUND}/round, E=1, B={BATCH}, {ROUNDS} rounds, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    floor(data, 99)  # warm-up: first-touch allocations and oneDNN kernel selection
    floors, shoals = [], []
    for i in range(args.repeats):
        floors.append(floor(data, i))
        shoals.append(run_shoal(fed, i))
        print(
            f"pair {i + 1}: floor {floors[-1]:.2f} s  shoal {shoals[-1]:.2f} s  "
            f"ratio {shoals[-1] / floors[-1]:.3f}"
        )
    ratios = [s / f for s, f in zip(shoals, floors, strict=True)]
    print(f"floor (median): {statistics.median(floors):.2f} s")
    print(f"shoal (median): {statistics.median(shoals):.2f} s")
    print(f"ratio: {statistics.median(ratios):.3f}  (median of paired ratios; target <= 1.10)")
    print(
        f"spread of ratios: {min(ratios):.3f} .. {max(ratios):.3f}; "
        f"model {sum(p.numel() for p in mcmahan_cnn().parameters()):,} params"
    )


if __name__ == "__main__":
    main()
