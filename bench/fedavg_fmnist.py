"""Rounds of FedAvg to 85% test accuracy on Fashion-MNIST, IID vs pathological non-IID.

The setting of McMahan et al. 2017 (C = 0.1 of 100 clients, E = 1, B = 32, the CNN, SGD
lr 0.05) on Fashion-MNIST: IID (600 random samples per client) and 2-shard non-IID (each
client holds two label-sorted shards of 300, so mostly two classes). The full 10,000-image
test set is evaluated after every round; a run stops at the target or at --max-rounds.

    .venv/bin/python bench/fedavg_fmnist.py [--target 0.85] [--max-rounds 300]

Each run writes a run folder with report.html under bench/results/.
Needs the Debian package dataset-fashion-mnist; without it, it says so and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import shoal
from shoal.data import fashion_mnist, fashion_mnist_available, iid, shards
from shoal.models import mcmahan_cnn
from shoal.report import render

OUT = Path(__file__).parent / "results"


def progress(name: str) -> Callable[[dict[str, Any]], None]:
    def show(r: dict[str, Any]) -> None:
        if r["round"] % 10 == 0:
            print(f"  {name} round {r['round']}: acc {r.get('test_accuracy', 0):.4f}", flush=True)

    return show


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--max-rounds", type=int, default=300)
    ap.add_argument("--only", choices=["iid", "shards"], help="run one partition only")
    args = ap.parse_args()
    if not fashion_mnist_available():
        print("skipped: Fashion-MNIST not found; apt-get install dataset-fashion-mnist")
        sys.exit(0)
    data = fashion_mnist()
    parts = {
        "iid": iid(data, 100, seed=0),
        "shards": shards(data, 100, shards_per_client=2, seed=0),
    }
    rows = []
    for name, fed in parts.items():
        if args.only and name != args.only:
            continue
        start = time.perf_counter()
        out = OUT / f"fmnist_{name}"
        h = shoal.simulate(
            mcmahan_cnn,
            fed,
            shoal.FedAvg(clients_per_round=10),
            shoal.TorchTrainer(lr=0.05, local_epochs=1, batch_size=32),
            rounds=args.max_rounds,
            seed=0,
            out_dir=out,
            stop_when=lambda r: (r.get("test_accuracy") or 0.0) >= args.target,
            callbacks=[progress(name)],
        )
        render(out)
        reached = h.rounds_to(args.target)
        best = max(v for _, v in h.series("test_accuracy"))
        rows.append(
            {
                "partition": name,
                "rounds_to_target": reached,
                "rounds_run": len(h.records),
                "best_accuracy": best,
                "wall_s": time.perf_counter() - start,
            }
        )
        print(
            f"{name}: rounds to {args.target:.0%}: {reached or f'not reached in {len(h.records)}'} "
            f"(best {best:.4f}, {rows[-1]['wall_s']:.0f} s)",
            flush=True,
        )
    print(f"\n| partition | rounds to {args.target:.0%} | best accuracy | rounds run |\n|---|---|---|---|")
    for r in rows:
        reached = r["rounds_to_target"] or "not reached"
        print(f"| {r['partition']} | {reached} | {r['best_accuracy']:.4f} | {r['rounds_run']} |")
    OUT.mkdir(exist_ok=True)
    (OUT / "fedavg_fmnist.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
