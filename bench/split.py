"""Split learning against FedAvg: accuracy, bytes and device compute per epoch, same task.

Fashion-MNIST (a seeded subset of --examples training images, IID over --clients clients,
all of them every round, so a round is one epoch over the data), the 2NN of McMahan et al.
(199,210 weights; --model cnn for their CNN), SGD lr 0.05, B = 32, from one seed and the
same initial weights. FedAvg trains one local epoch per round (shoal.simulate); SplitNN
(vanilla and U-shaped) relays the device part from device to device; SplitFed-V1 averages
device parts and server copies each round. The 2NN is cut after its first hidden layer
(the device holds 784x200 weights and sends 200 numbers per example), the CNN after its
first conv block (32x14x14 per example); U-shaped also keeps the last layer on the device.

Per epoch, averaged over rounds: MB up and down (exact encoded sizes: tasks and results
for FedAvg; every split message, the device weights' relay included), device GFLOP (all
devices together: forward and backward passes counted by torch's FLOP counter), device
seconds (the same passes with their SGD steps, measured on this machine; for FedAvg a
plain loop of the whole model over the same batches), and server GFLOP. Accuracy is the
final round's on the 10,000 test images, and the mean of the last three.

    .venv/bin/python bench/split.py [--rounds 10] [--model 2nn|cnn] [--clients 10] [--examples 10000]

Without Fashion-MNIST (apt-get install dataset-fashion-mnist) it says so and uses the
bundled 5,000-image MNIST subset. Writes bench/results/split.json (split_cnn.json for the CNN).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import shoal
from shoal.data import (
    FederatedDataset,
    LabeledData,
    fashion_mnist,
    fashion_mnist_available,
    iid,
    mnist_subset,
)
from shoal.models import ModelFactory, mcmahan_2nn, mcmahan_cnn
from shoal.runtime.history import History
from shoal.split import SplitConfig, run_split
from shoal.split.compute import FlopCount

OUT = Path(__file__).parent / "results"
LR, BATCH = 0.05, 32
CUTS = {"2nn": {"vanilla": (3,), "u": (3, 5)}, "cnn": {"vanilla": (3,), "u": (3, 9)}}


def task(examples: int, clients: int, seed: int) -> tuple[FederatedDataset, bool]:
    fmnist = fashion_mnist_available()
    if not fmnist:
        print(
            "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); using MNIST's subset"
        )
    full = fashion_mnist() if fmnist else mnist_subset()
    keep = np.sort(np.random.default_rng(seed).permutation(len(full.train))[:examples])
    data = LabeledData(full.name, full.train.subset(keep), full.test, full.num_classes)
    return iid(data, num_clients=clients, seed=seed), fmnist


def fedavg(model: ModelFactory, data: FederatedDataset, rounds: int, seed: int) -> History:
    return shoal.simulate(
        model,
        data,
        shoal.FedAvg(clients_per_round=len(data)),
        shoal.TorchTrainer(lr=LR, local_epochs=1, batch_size=BATCH),
        rounds=rounds,
        seed=seed,
    )


def fedavg_device_compute(model: ModelFactory, data: FederatedDataset) -> tuple[float, int]:
    """What FedAvg's devices spend on one epoch: the whole model's forward, backward and SGD
    step over every client's batches (seconds measured, FLOPs counted)."""
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    count = FlopCount(net, data.input_shape, input_grad=False, loss=True)
    seconds, flops = 0.0, 0
    for cid in data.client_ids:
        train = data[cid].train
        for s in range(0, len(train), BATCH):
            x, y = train.x[s : s + BATCH], train.y[s : s + BATCH]
            start = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
            seconds += time.perf_counter() - start
            flops += count(len(y))
    return seconds, flops


def row(history: History, wall: float, device: tuple[float, int] | None = None) -> dict[str, Any]:
    recs = history.records
    acc = [r["test_accuracy"] for r in recs if r.get("test_accuracy") is not None]
    per = len(recs)
    out = {
        "accuracy": acc[-1],
        "accuracy_last3": float(np.mean(acc[-3:])),
        "mb_up_per_epoch": history.bytes_up / per / 1e6,
        "mb_down_per_epoch": history.bytes_down / per / 1e6,
        "wall_s": wall,
    }
    if device is not None:  # FedAvg: measured apart from the simulation
        out["device_s_per_epoch"], out["device_gflop_per_epoch"] = device[0], device[1] / 1e9
        out["server_gflop_per_epoch"] = 0.0
    else:
        out["device_s_per_epoch"] = sum(r["device_seconds"] for r in recs) / per
        out["device_gflop_per_epoch"] = sum(r["device_flops"] for r in recs) / per / 1e9
        out["server_gflop_per_epoch"] = sum(r["server_flops"] for r in recs) / per / 1e9
        out["refused"] = sum(len(r["refused"]) for r in recs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--model", choices=["2nn", "cnn"], default="2nn")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--examples", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: timings survive a busy machine)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data, fmnist = task(args.examples, args.clients, args.seed)
    base = mcmahan_cnn if args.model == "cnn" else mcmahan_2nn
    model = functools.partial(base, data.input_shape, data.num_classes)
    cuts = CUTS[args.model]
    runs: dict[str, Any] = {
        "FedAvg": None,
        "SplitNN": SplitConfig(cuts=cuts["vanilla"], protocol="splitnn"),
        "SplitNN U-shaped": SplitConfig(cuts=cuts["u"], protocol="splitnn"),
        "SplitFed-V1": SplitConfig(cuts=cuts["vanilla"], protocol="splitfed-v1"),
        "SplitFed-V1 U-shaped": SplitConfig(cuts=cuts["u"], protocol="splitfed-v1"),
    }
    print(
        f"{args.model} on {data.name}: {args.examples} examples over {args.clients} clients, "
        f"{args.rounds} rounds (1 epoch each), B={BATCH}, lr={LR}"
    )
    head = f"{'method':<22} {'acc':>6} {'acc3':>6} {'MB up':>8} {'MB down':>8} {'dev GFLOP':>9} {'dev s':>6}"
    print(f"{head} {'srv GFLOP':>9} {'wall s':>7}   (per epoch)")
    rows: dict[str, dict[str, Any]] = {}
    for name, config in runs.items():
        start = time.perf_counter()
        if config is None:
            history = fedavg(model, data, args.rounds, args.seed)
            rows[name] = row(history, time.perf_counter() - start, fedavg_device_compute(model, data))
        else:
            config = SplitConfig(**{**config.__dict__, "lr": LR, "batch_size": BATCH, "seed": args.seed})
            history = run_split(model, data, config, args.rounds)
            rows[name] = row(history, time.perf_counter() - start)
        r = rows[name]
        print(
            f"{name:<22} {r['accuracy']:>6.4f} {r['accuracy_last3']:>6.4f} {r['mb_up_per_epoch']:>8.2f} "
            f"{r['mb_down_per_epoch']:>8.2f} {r['device_gflop_per_epoch']:>9.2f} "
            f"{r['device_s_per_epoch']:>6.2f} {r['server_gflop_per_epoch']:>9.2f} {r['wall_s']:>7.1f}",
            flush=True,
        )
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "fmnist": fmnist, "rounds": args.rounds, "clients": args.clients}
    meta |= {
        "examples": args.examples,
        "seed": args.seed,
        "lr": LR,
        "batch_size": BATCH,
        "threads": args.threads,
    }
    meta["cuts"] = {k: list(v) for k, v in cuts.items()}
    name = "split.json" if args.model == "2nn" else f"split_{args.model}.json"
    (OUT / name).write_text(json.dumps({**meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
