"""What each uplink compressor costs in accuracy, and what it saves on the wire.

FedAvg on Fashion-MNIST split non-IID over 100 clients (Dirichlet alpha = 0.5 over labels),
10 clients a round, E = 1, B = 32, SGD lr 0.05; the 2NN of McMahan et al. (199,210
weights) by default, or their CNN (1.66M) with --model cnn. Every compressor runs the same
rounds from the same seed; the table gives the final accuracy (mean of the last five
evaluations on the 10,000 test images, so one lucky round does not decide), the total
uplink in MB as the wire codec encodes it (headers included), the ratio against float32,
and the accuracy lost against uncompressed. It ends with the highest ratio whose accuracy
stays within one point.

    .venv/bin/python bench/compression.py [--rounds 200] [--model 2nn|cnn] [--only top-k-0.01,sign]

Without Fashion-MNIST (apt-get install dataset-fashion-mnist) it says so and uses the 8x8
digits instead. Writes bench/results/compression.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from shoal import config as cfgmod
from shoal import experiment
from shoal.data import fashion_mnist_available

OUT = Path(__file__).parent / "results"

# name -> [compression] table; the issue's list, plus a milder top-k and random mask
COMPRESSORS: dict[str, dict[str, Any]] = {
    "none": {},
    "float16": {"uplink": "half"},
    "8-bit": {"uplink": "quantize", "bits": 8},
    "4-bit": {"uplink": "quantize", "bits": 4},
    "2-bit": {"uplink": "quantize", "bits": 2},
    "1-bit": {"uplink": "quantize", "bits": 1},
    "top-10% + EF": {"uplink": "top-k", "keep_fraction": 0.1},
    "top-1% + EF": {"uplink": "top-k", "keep_fraction": 0.01},
    "top-0.1% + EF": {"uplink": "top-k", "keep_fraction": 0.001},
    "top-1% no EF": {"uplink": "top-k", "keep_fraction": 0.01, "error_feedback": False},
    "sign + EF": {"uplink": "sign"},
    "powersgd-4 + EF": {"uplink": "powersgd", "rank": 4},
    "powersgd-1 + EF": {"uplink": "powersgd", "rank": 1},
    "random-mask 10%": {"uplink": "random-mask", "keep_fraction": 0.1},
    # composed: the kept values quantized or signed (DGC-scale ratios)
    "random-mask 10% + 1-bit": {
        "uplink": "random-mask",
        "keep_fraction": 0.1,
        "values": "quantize",
        "bits": 1,
    },
    "random-mask 5% + 1-bit": {
        "uplink": "random-mask",
        "keep_fraction": 0.05,
        "values": "quantize",
        "bits": 1,
    },
    "top-1% + EF + sign": {"uplink": "top-k", "keep_fraction": 0.01, "values": "sign"},
    "top-0.1% + EF + sign": {"uplink": "top-k", "keep_fraction": 0.001, "values": "sign"},
}


def base_config(rounds: int, model: str, fmnist: bool) -> dict[str, Any]:
    data = (
        {"dataset": "fashion-mnist", "partition": "dirichlet", "dirichlet_alpha": 0.5, "num_clients": 100}
        if fmnist
        else {"dataset": "digits", "partition": "dirichlet", "dirichlet_alpha": 0.5, "num_clients": 50}
    )
    return {
        "rounds": rounds,
        "seed": 0,
        "data": data,
        "model": {"name": "mcmahan_cnn" if model == "cnn" else "mcmahan_2nn"},
        "strategy": {"name": "fedavg", "clients_per_round": 10},
        "trainer": {"lr": 0.05, "local_epochs": 1, "batch_size": 32},
    }


def measure(raw: dict[str, Any], out: Path) -> dict[str, Any]:
    cfg = cfgmod.from_dict(raw)
    start = time.perf_counter()
    history = experiment.run(cfg, out)
    accuracy = [v for _, v in history.series("test_accuracy")]
    return {
        "accuracy": float(np.mean(accuracy[-5:])),
        "uplink_mb": history.bytes_up / 1e6,
        "downlink_mb": history.bytes_down / 1e6,
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--model", choices=["2nn", "cnn"], default="2nn")
    ap.add_argument("--only", help="comma-separated names from the table (none always runs)")
    args = ap.parse_args()
    fmnist = fashion_mnist_available()
    if not fmnist:
        print("note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); using digits")
    names = list(COMPRESSORS)
    if args.only:
        wanted = {n.strip() for n in args.only.split(",")}
        unknown = wanted - set(COMPRESSORS)
        if unknown:
            ap.error(f"unknown compressors {sorted(unknown)}; choose from {names}")
        names = ["none", *[n for n in names if n in wanted and n != "none"]]
    base = base_config(args.rounds, args.model, fmnist)
    rows: dict[str, dict[str, Any]] = {}
    print(f"{'compressor':<24} {'accuracy':>8} {'uplink MB':>10} {'ratio':>8} {'lost':>7} {'wall s':>7}")
    for name in names:
        raw = {**base, "compression": COMPRESSORS[name]}
        row = measure(raw, OUT / "compression" / name.replace(" ", "_").replace("%", "pct"))
        plain = rows.get("none", row)
        row["ratio"] = plain["uplink_mb"] / row["uplink_mb"]
        row["lost_points"] = 100 * (plain["accuracy"] - row["accuracy"])
        rows[name] = row
        print(
            f"{name:<24} {row['accuracy']:>8.4f} {row['uplink_mb']:>10.2f} {row['ratio']:>7.1f}x "
            f"{row['lost_points']:>7.2f} {row['wall_s']:>7.1f}",
            flush=True,
        )
    within = [n for n, r in rows.items() if r["lost_points"] <= 1.0]
    best = max(within, key=lambda n: rows[n]["ratio"])
    print(
        f"\nhighest ratio within 1 point of uncompressed: {best}, {rows[best]['ratio']:.1f}x "
        f"({rows[best]['accuracy']:.4f} vs {rows['none']['accuracy']:.4f}) after {args.rounds} rounds"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "compression.json").write_text(
        json.dumps({"rounds": args.rounds, "model": args.model, "fmnist": fmnist, "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
