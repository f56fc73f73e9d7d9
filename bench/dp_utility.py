"""Privacy against utility: test accuracy at epsilon 0.25 to 8 and without DP.

Central DP-FedAvg on Fashion-MNIST split IID over 1,000 clients (60 examples each, the
W2 population), the 2NN, E = 1, B = 10, lr 0.05; each round Poisson-samples clients with
q = 0.1 (about 100), the server clips every update to a norm that tracks the median
(adaptive clipping, Andrew et al. 2021), noises the sum and averages. For each target
epsilon (client level, delta = 1/N^1.1) the noise multiplier is calibrated with the RDP
accountant so that the whole run of --rounds rounds stays within it.

Beside it, distributed DP (--distributed, default epsilon 8): no trusted server. Each
device clips to a fixed 0.5, rotates, rounds and adds its share of Skellam noise inside
SecAgg+'s ring (Agarwal et al. 2021): 16 bits, or the narrowest of 20 and 24 that the
noise fits. The server unmasks only the noised sum. Its noise multiplier is calibrated
so that every round, even one whose sum holds only the noise of min_clients (80% of the
expected cohort), keeps the run within the target; no amplification by sampling is
claimed, so the same epsilon needs far more noise.
SecAgg costs about 6 s a round on Fashion-MNIST (--distributed "" skips it).

    .venv/bin/python bench/dp_utility.py [--rounds 100] [--epsilons 0.25,0.5,1,2,4,8] [--distributed 8]

Without Fashion-MNIST (apt-get install dataset-fashion-mnist) it says so and uses the
8x8 digits over 100 clients instead. Prints a table; writes bench/results/dp_utility.png.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shoal import config as cfgmod
from shoal import experiment
from shoal.data import fashion_mnist_available
from shoal.errors import ConfigError
from shoal.privacy import calibrate_noise
from shoal.privacy.distributed import DistributedDP
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


RINGS = (16, 20, 24)  # the narrowest SecAgg ring whose grid the calibrated noise leaves fine enough


def distributed_noise(target: float, rounds: int, cohort: int, min_clients: int, num_params: int,
                      delta: float) -> tuple[float, int]:  # fmt: skip
    """The smallest noise multiplier (to 1%) whose planned epsilon stays within ``target``,
    and the narrowest ring that carries it (more noise needs a coarser grid in a ring)."""
    for bits in RINGS:

        def eps(z: float, bits: int = bits) -> float:
            dp = DistributedDP(noise_multiplier=z, clip_norm=0.5, min_clients=min_clients, delta=delta)
            return dp.planned_epsilon(rounds, cohort, bits, num_params)

        low, high = 0.05, 200.0
        while high / low > 1.01:  # epsilon falls as the noise grows
            mid = math.sqrt(low * high)
            try:
                private = eps(mid) <= target
            except ConfigError:  # so much noise that this ring's grid is too coarse: less, then
                private = True
            low, high = (low, mid) if private else (mid, high)
        try:
            eps(high)
        except ConfigError:
            continue
        return high, bits
    raise SystemExit(f"no ring of {RINGS} bits carries the noise epsilon {target} needs")


def distributed_config(raw: dict[str, Any], z: float, min_clients: int, bits: int) -> dict[str, Any]:
    run: dict[str, Any] = json.loads(json.dumps(raw))
    run["privacy"] = {
        "mode": "distributed",
        "noise_multiplier": z,
        "clip_norm": 0.5,
        "min_clients": min_clients,
    }
    run["secagg"] = {"mode": "secagg+", "ring_bits": bits}
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--epsilons", default="0.25,0.5,1,2,4,8")
    ap.add_argument("--distributed", default="8", help="target epsilons of distributed DP ('' for none)")
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
    cohort = round(sampling.expected_size)
    min_clients = int(0.8 * cohort)
    runs = [("central", float(e)) for e in args.epsilons.split(",") if e] + [("central", float("inf"))]
    runs += [("distributed", float(e)) for e in args.distributed.split(",") if e]
    for mechanism, target in runs:
        run = json.loads(json.dumps(raw))
        z = None
        if mechanism == "distributed":
            num_params = experiment.build(cfgmod.from_dict(raw), None).spec.num_params
            z, bits = distributed_noise(target, args.rounds, cohort, min_clients, num_params, delta)
            run = distributed_config(raw, z, min_clients, bits)
            print(f"distributed target {target:g}: z {z:.3f} in a {bits}-bit ring", flush=True)
        elif target != float("inf"):
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
                "mechanism": mechanism,
                "target": target,
                "noise_multiplier": z,
                "epsilon": eps[-1][1] if eps else float("inf"),
                "accuracy": history.final_accuracy,
                "curve": history.series("test_accuracy"),
                "clip": history.series("dp_clip_norm")[-1][1] if mechanism == "central" and z else 0.5,
                "drift": float(np.linalg.norm(history.params - start_params)),
                "seconds": time.perf_counter() - start,
            }
        )
        r = rows[-1]
        print(
            f"{mechanism} target {target:>4}: z {z or 0:.3f}  epsilon {r['epsilon']:.3f}  "
            f"acc {r['accuracy']:.4f}  {r['seconds']:.0f} s",
            flush=True,
        )
    name = "Fashion-MNIST, 1000 clients" if fmnist else "digits, 100 clients"
    print(f"\n{name}, q = 0.1, {args.rounds} rounds, delta = {delta:.2g}, adaptive clipping (median)\n")
    print("| mechanism | target eps | noise mult. | eps spent | clip norm | ||w_T - w_0|| | test accuracy |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        z = f"{r['noise_multiplier']:.3f}" if r["noise_multiplier"] else "-"
        clip = f"{r['clip']:.3f}" if r["noise_multiplier"] else "-"
        cells = [
            "no DP" if r["target"] == float("inf") else r["mechanism"],
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
    for mechanism in ("central", "distributed"):
        finite = [
            r for r in rows if r["target"] != float("inf") and r.get("mechanism", "central") == mechanism
        ]
        if finite:
            eps, acc = [r["epsilon"] for r in finite], [r["accuracy"] for r in finite]
            left.plot(eps, acc, marker="o", label=f"{mechanism} DP")
    no_dp = [r for r in rows if r["target"] == float("inf")]
    if no_dp:
        left.axhline(no_dp[0]["accuracy"], ls="--", color="gray", label="no DP")
    left.set(xscale="log", xlabel="epsilon (client level)", ylabel="final test accuracy", title=name)
    left.legend()
    for r in rows:
        rounds, acc = zip(*r["curve"], strict=True)
        name = (
            "no DP" if r["target"] == float("inf") else f"{r.get('mechanism', 'central')} eps {r['target']:g}"
        )
        right.plot(rounds, acc, label=name)
    right.set(xlabel="round", ylabel="test accuracy")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
