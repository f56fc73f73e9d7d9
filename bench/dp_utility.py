"""Privacy against utility: test accuracy at epsilon 0.25 to 8 and without DP.

Central DP-FedAvg on Fashion-MNIST split IID over 1,000 clients (60 examples each, the
W2 population), the 2NN, E = 1, B = 10, lr 0.05; each round Poisson-samples clients with
q = 0.1 (about 100), the server clips every update to a norm that tracks the median
(adaptive clipping, Andrew et al. 2021), noises the sum and averages. For each target
epsilon (client level, delta = 1/N^1.1) the noise multiplier is calibrated with the RDP
accountant so that the whole run of --rounds rounds stays within it.

    .venv/bin/python bench/dp_utility.py [--rounds 100] [--epsilons 0.25,0.5,1,2,4,8]

Without Fashion-MNIST (apt-get install dataset-fashion-mnist) it says so and uses the
8x8 digits over 100 clients instead. Prints a table; writes bench/results/dp_utility.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shoal import config as cfgmod
from shoal import experiment
from shoal.data import fashion_mnist_available
from shoal.privacy import calibrate_noise
from shoal.sampling import Sampling

OUT = Path(__file__).parent / "results"


def base_config(rounds: int, fmnist: bool) -> dict[str, Any]:
    data = (
        {"dataset": "fashion-mnist", "partition": "iid", "num_clients": 1000}
        if fmnist
        else {"dataset": "digits", "partition": "iid", "num_clients": 100}
    )
    return {
        "rounds": rounds,
        "seed": 0,
        "data": data,
        "model": {"name": "mcmahan_2nn"} if fmnist else {"name": "mlp", "hidden": [64]},
        "strategy": {"name": "fedavg", "sampling": "poisson", "fraction": 0.1},
        "trainer": {"lr": 0.05, "local_epochs": 1, "batch_size": 10},
        "eval": {"eval_every": 5},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--epsilons", default="0.25,0.5,1,2,4,8")
    args = ap.parse_args()
    torch.set_num_threads(1)
    fmnist = fashion_mnist_available()
    if not fmnist:
        print("note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); using digits")
    raw = base_config(args.rounds, fmnist)
    population = raw["data"]["num_clients"]
    sampling = Sampling.poisson(0.1, population)
    delta = population**-1.1
    rows: list[dict[str, Any]] = []
    for target in [float(e) for e in args.epsilons.split(",")] + [float("inf")]:
        run = json.loads(json.dumps(raw))
        z = None
        if target != float("inf"):
            z = calibrate_noise(sampling, args.rounds, target, delta)
            run["privacy"] = {
                "mode": "central",
                "noise_multiplier": z,
                "clip_norm": 0.5,
                "adaptive_clipping": True,
                # the clip count's noise must satisfy 2 sigma_b > z (Andrew et al.); E[m]/20 = 5 here
                "clip_count_stddev": max(5.0, z),
            }
        cfg = cfgmod.from_dict(run)
        sim = experiment.build(cfg, None)
        start_params = sim.params.copy()
        start = time.perf_counter()
        history = sim.run(cfg.rounds)
        eps = history.series("dp_epsilon")
        rows.append(
            {
                "target": target,
                "noise_multiplier": z,
                "epsilon": eps[-1][1] if eps else float("inf"),
                "accuracy": history.final_accuracy,
                "curve": history.series("test_accuracy"),
                "clip": history.series("dp_clip_norm")[-1][1] if z else None,
                "drift": float(np.linalg.norm(history.params - start_params)),
                "seconds": time.perf_counter() - start,
            }
        )
        r = rows[-1]
        print(
            f"target {target:>4}: z {z or 0:.3f}  epsilon {r['epsilon']:.3f}  acc {r['accuracy']:.4f}  "
            f"{r['seconds']:.0f} s",
            flush=True,
        )
    name = "Fashion-MNIST, 1000 clients" if fmnist else "digits, 100 clients"
    print(f"\n{name}, q = 0.1, {args.rounds} rounds, delta = {delta:.2g}, adaptive clipping (median)\n")
    print("| target eps | noise multiplier | eps spent | final clip norm | ||w_T - w_0|| | test accuracy |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        z = f"{r['noise_multiplier']:.3f}" if r["noise_multiplier"] else "-"
        clip = f"{r['clip']:.3f}" if r["clip"] else "-"
        cells = [
            f"{r['target']:g}",
            z,
            f"{r['epsilon']:.3f}",
            clip,
            f"{r['drift']:.1f}",
            f"{r['accuracy']:.4f}",
        ]
        print("| " + " | ".join(cells) + " |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dp_utility.json").write_text(json.dumps(rows))
    _plot(rows, OUT / "dp_utility.png", name)


def _plot(rows: list[dict[str, Any]], path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    finite = [r for r in rows if r["target"] != float("inf")]
    left.plot([r["epsilon"] for r in finite], [r["accuracy"] for r in finite], marker="o", label="central DP")
    no_dp = [r for r in rows if r["target"] == float("inf")]
    if no_dp:
        left.axhline(no_dp[0]["accuracy"], ls="--", color="gray", label="no DP")
    left.set(xscale="log", xlabel="epsilon (client level)", ylabel="final test accuracy", title=name)
    left.legend()
    for r in rows:
        rounds, acc = zip(*r["curve"], strict=True)
        right.plot(rounds, acc, label="no DP" if r["target"] == float("inf") else f"eps {r['target']:g}")
    right.set(xlabel="round", ylabel="test accuracy")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
