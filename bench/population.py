"""What a population of a million devices costs a round, against a thousand.

FedProx's synthetic(1, 1) task made lazily (``dataset = "synthetic-population"``: each
device's data from its own seed when it is first picked), the ``phones`` fleet, FedAvg
with 100 devices a round, logistic regression, 10 local steps of batch 10 (the same work
per device at every size). Each population runs in a fresh process, so peak memory is
its own. Prints the build time, the median seconds per round over rounds 2-6, and the
peak resident memory.

    .venv/bin/python bench/population.py                       # about a minute on 2 cores
    .venv/bin/python bench/population.py --sizes 1000 10000000
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from shoal import config, experiment


def one(size: int, rounds: int) -> dict[str, float]:
    start = time.perf_counter()
    cfg = config.from_dict(
        {
            "rounds": rounds,
            "seed": 0,
            "backend": "inprocess",
            "fleet": "phones",
            "data": {"dataset": "synthetic-population", "num_clients": size},
            "model": {"name": "mlp", "hidden": []},
            "strategy": {"clients_per_round": 100},
            "trainer": {"lr": 0.01, "local_steps": 10, "batch_size": 10},
        }
    )
    sim = experiment.build(cfg, None)
    built = time.perf_counter() - start
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        sim.step(rounds)
        times.append(time.perf_counter() - t)
    return {
        "size": size,
        "build_s": built,
        "s_per_round": statistics.median(times[1:]),
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process's size
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.rounds)))
        return
    print(f"{'population':>12} {'build s':>8} {'s/round':>8} {'peak MiB':>9}")
    for size in args.sizes:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(size), "--rounds", str(args.rounds)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{r['size']:>12,} {r['build_s']:>8.2f} {r['s_per_round']:>8.3f} {r['peak_mib']:>9.0f}")


if __name__ == "__main__":
    main()
