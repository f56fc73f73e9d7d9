"""What each defence holds against each attack: final accuracy, attack x defence x share hostile.

FedAvg on Fashion-MNIST split non-IID over 100 clients (Dirichlet alpha = 0.5), 20 a round,
the 2NN, E = 1, B = 32, SGD lr 0.05, --rounds rounds from one seed. The backdoor rows give
its success rate (lower is better for the defence), every other row test accuracy. A share of the
population (10%, 20%, 30%, chosen by seed, the same clients every round) is hostile; each
defence is built for f = that share of a round's 20 clients, rounded up (more can land in
one round by chance, as they would in deployment; --f-quantile 0.95 builds each for the
95th percentile of hostile clients a round instead). Accuracy is the mean of the last three
evaluations on the 10,000 test images. A defence that cannot tolerate f with 20 clients
(Bulyan needs n >= 4f + 3) is shown as "refused".

    .venv/bin/python bench/robustness.py [--rounds 30] [--attacks alie,ipm] [--defences median]

Without Fashion-MNIST (apt-get install dataset-fashion-mnist) it says so and uses the 8x8
digits. Prints one table per share and writes bench/results/robustness.json and the heat
map docs/figures/robustness.png.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from shoal import config as cfgmod
from shoal import experiment
from shoal.attacks.poison import backdoor_success
from shoal.config.names import AttackName
from shoal.data import fashion_mnist_available
from shoal.errors import ConfigError
from shoal.params import to_module

OUT = Path(__file__).parent / "results"
FIGURE = Path(__file__).parents[1] / "docs" / "figures" / "robustness.png"
PER_ROUND = 20
SHARES = (0.1, 0.2, 0.3)
DEFENCES: dict[str, dict[str, Any]] = {  # name -> [strategy] keys; attackers is filled in per share
    "mean": {"aggregator": "mean"},
    "median": {"aggregator": "median"},
    "trimmed-mean": {"aggregator": "trimmed-mean"},
    "geometric-median": {"aggregator": "geometric-median"},
    "multi-krum": {"aggregator": "multi-krum"},
    "bulyan": {"aggregator": "bulyan"},
    "centered-clipping": {"aggregator": "centered-clipping", "cc_tau": 0.5},
    "nnm + median": {"aggregator": "median", "pre_aggregation": ["nnm"]},
}


def base(rounds: int, fmnist: bool) -> dict[str, Any]:
    data = {"dataset": "fashion-mnist" if fmnist else "digits", "partition": "dirichlet"}
    return {
        "rounds": rounds,
        "seed": 0,
        "data": {**data, "dirichlet_alpha": 0.5, "num_clients": 100},
        "model": {"name": "mcmahan_2nn"},
        "strategy": {"clients_per_round": PER_ROUND},
        "trainer": {"lr": 0.05, "local_epochs": 1, "batch_size": 32},
    }


def attackers_for(share: float, quantile: float | None) -> int:
    """f for a round of PER_ROUND when ``share`` of the population is hostile: the mean
    rounded up, or the smallest f that covers ``quantile`` of rounds (binomial)."""
    if quantile is None:
        return math.ceil(share * PER_ROUND)
    covered = 0.0
    for f in range(PER_ROUND + 1):
        covered += math.comb(PER_ROUND, f) * share**f * (1 - share) ** (PER_ROUND - f)
        if covered >= quantile:
            return f
    return PER_ROUND


def accuracy(raw: dict[str, Any], data: Any) -> float | None:
    """Final accuracy; for a backdoor, its success rate instead (the share of triggered test
    inputs of other labels sent to the target: what the attacker wants)."""
    try:
        cfg = cfgmod.from_dict(raw)
    except ConfigError:
        return None  # the defence cannot vouch for this many attackers
    sim = experiment.build(cfg, None, data=data)
    history = sim.run(cfg.rounds)
    if cfg.trainer.attack is AttackName.BACKDOOR:
        module = experiment.model_factory(cfg, data)()
        to_module(sim.params, sim.spec, module)
        return backdoor_success(module, data.test, cfg.trainer.attack_target)
    return float(np.mean([v for _, v in history.series("test_accuracy")][-3:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--attacks", default=",".join(a.value for a in AttackName))
    ap.add_argument("--defences", default=",".join(DEFENCES))
    ap.add_argument(
        "--f-quantile",
        type=float,
        help="build each defence for the q-quantile of hostile clients a round (binomial), not the mean",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="add these attacks to bench/results/robustness.json from an earlier run of the same settings",
    )
    args = ap.parse_args()
    attacks = [AttackName(a) for a in args.attacks.split(",") if a]
    defences = [d for d in args.defences.split(",") if d]
    if unknown := set(defences) - set(DEFENCES):
        ap.error(f"unknown defences {sorted(unknown)}; choose from {list(DEFENCES)}")
    fmnist = fashion_mnist_available()
    if not fmnist:
        print("note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); using digits")
    raw = base(args.rounds, fmnist)
    data = experiment.load_data(cfgmod.from_dict(raw))
    start = time.perf_counter()
    settings = {"rounds": args.rounds, "fmnist": fmnist, "f_quantile": args.f_quantile, "defences": defences}
    earlier = json.loads((OUT / "robustness.json").read_text()) if args.merge else None
    if earlier is not None:
        earlier.setdefault("defences", list(DEFENCES))  # runs before these keys were written
        earlier.setdefault("f_quantile", None)
        if {k: earlier[k] for k in settings} != settings:
            ap.error(f"--merge: the earlier run's settings differ: { {k: earlier[k] for k in settings} }")
    clean = (
        earlier["rows"]["clean"]
        if earlier is not None
        else {d: accuracy({**raw, "strategy": {**raw["strategy"], **DEFENCES[d]}}, data) for d in defences}
    )
    rows: dict[str, Any] = {"clean": clean}
    for share in SHARES:
        f = attackers_for(share, args.f_quantile)
        table = {}
        for attack in attacks:
            trainer = {**raw["trainer"], "attack": attack.value, "attack_fraction": share}
            table[attack.value] = {
                d: accuracy(
                    {
                        **raw,
                        "trainer": trainer,
                        "strategy": {**raw["strategy"], **DEFENCES[d], "attackers": f if d != "mean" else 0},
                    },
                    data,
                )
                for d in defences
            }
            print(
                f"{share:.0%} {attack.value:<10} "
                + " ".join(_cell(table[attack.value][d]) for d in defences),
                flush=True,
            )
        rows[f"{share:.0%}"] = {**(earlier["rows"][f"{share:.0%}"] if earlier else {}), **table}
    order = [a.value for a in AttackName]  # the merged tables in the enum's order
    for share in SHARES:
        rows[f"{share:.0%}"] = dict(sorted(rows[f"{share:.0%}"].items(), key=lambda kv: order.index(kv[0])))
    attacks = [AttackName(a) for a in rows[f"{SHARES[0]:.0%}"]]
    print(f"\n{'Fashion-MNIST' if fmnist else 'digits'}, Dirichlet 0.5, 100 clients, {PER_ROUND} a round, "
          f"{args.rounds} rounds, {time.perf_counter() - start:.0f} s\n")  # fmt: skip
    header = "| attack | " + " | ".join(defences) + " |"
    print("| clean | " + " | ".join(_cell(clean[d]) for d in defences) + " |")
    for share in SHARES:
        print(
            f"\n{share:.0%} hostile (f = {attackers_for(share, args.f_quantile)})\n\n{header}\n|"
            + "---|" * (len(defences) + 1)
        )
        for attack, cells in rows[f"{share:.0%}"].items():
            print(f"| {attack} | " + " | ".join(_cell(cells[d]) for d in defences) + " |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "robustness.json").write_text(json.dumps({**settings, "rows": rows}, indent=1))
    _heatmap(rows, attacks, defences)


def _cell(value: float | None) -> str:
    return "refused" if value is None else f"{value:.3f}"


def _heatmap(rows: dict[str, Any], attacks: list[AttackName], defences: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SHARES), figsize=(5 * len(SHARES), 0.5 * len(attacks) + 2), sharey=True)
    for ax, share in zip(np.atleast_1d(axes), SHARES, strict=True):
        table = rows[f"{share:.0%}"]
        grid = np.array(
            [[np.nan if table[a.value][d] is None else table[a.value][d] for d in defences] for a in attacks]
        )
        ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"{share:.0%} hostile")
        ax.set_xticks(range(len(defences)), defences, rotation=60, ha="right")
        labels = [f"{a.value} (success rate)" if a is AttackName.BACKDOOR else a.value for a in attacks]
        ax.set_yticks(range(len(attacks)), labels)
        for i in range(len(attacks)):
            for j in range(len(defences)):
                ax.text(
                    j,
                    i,
                    "-" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                )
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=120)
    print(f"heat map: {FIGURE}")


if __name__ == "__main__":
    main()
