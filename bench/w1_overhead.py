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
import torch.nn.functional as F

import shoal
from shoal.data import ArrayDataset, LabeledData, fashion_mnist, fashion_mnist_available, iid
from shoal.models import mcmahan_cnn

ROUNDS, CLIENTS, PER_ROUND, SAMPLES, BATCH, LR = 5, 100, 10, 600, 32, 0.05


def load() -> LabeledData:
    if fashion_mnist_available():
        return fashion_mnist()
    print("note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); using random images")
    g = torch.Generator().manual_seed(0)
    train = ArrayDataset(
        torch.rand(60000, 1, 28, 28, generator=g), torch.randint(0, 10, (60000,), generator=g)
    )
    return LabeledData("random", train, None, 10)


def floor(data: LabeledData, seed: int) -> float:
    """The same sample-steps in one plain loop: the cost of the training itself."""
    torch.manual_seed(seed)
    model = mcmahan_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x, y = data.train.x, data.train.y
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for block in range(ROUNDS * PER_ROUND):
        base = torch.randperm(SAMPLES, generator=g) + block * SAMPLES
        for s in range(0, SAMPLES, BATCH):
            idx = base[s : s + BATCH]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return time.perf_counter() - start


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
    data = load()
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
