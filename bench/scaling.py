"""Time per round and peak memory as the cohort grows: sequential vs vectorized vs Ray.

The W2 setting (Fashion-MNIST, the 2NN, 1000 clients of 60 samples, E=1, B=10, SGD lr
0.05) with 10, 100 and 1000 clients a round. Each configuration runs in a fresh
subprocess for ``--rounds`` rounds; the figure is the median round time after the first
round (which pays start-up: Ray's workers, first-touch allocations). Peak memory is the
largest resident set of the whole process tree (Ray's workers included), sampled every
0.1 s.

    .venv/bin/python bench/scaling.py [--rounds 3] [--sizes 10,100,1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time

import psutil

BACKENDS = ("inprocess", "vectorized", "ray")


def child(per_round: int, backend: str, rounds: int) -> None:
    import torch

    import shoal
    from shoal.data import LabeledData, iid
    from shoal.models import mcmahan_2nn
    from shoal.runtime.ray_backend import RayBackend
    from shoal.runtime.vectorized import VectorizedBackend

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from common import fmnist_or_random as load

    data = load()
    fed = iid(LabeledData(data.name, data.train, None, 10), num_clients=1000, seed=0)
    trainer = shoal.TorchTrainer(lr=0.05, local_epochs=1, batch_size=10)
    if backend == "vectorized":
        chosen = VectorizedBackend(trainer, mcmahan_2nn, fed, cohort_size=32)
    elif backend == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        chosen = RayBackend(trainer, mcmahan_2nn, fed, num_workers=2)
    else:
        chosen = None
    h = shoal.simulate(
        mcmahan_2nn,
        fed,
        shoal.FedAvg(clients_per_round=per_round),
        trainer,
        rounds=rounds,
        seed=0,
        eval_every=0,
        backend=chosen,
    )
    times = [r["wall_time"] for r in h.records[1:]] or [h.records[0]["wall_time"]]
    print(json.dumps({"round_s": statistics.median(times), "threads": torch.get_num_threads()}))


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def measure(per_round: int, backend: str, rounds: int) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--child", str(per_round), backend, str(rounds)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    ps, peak, done = psutil.Process(proc.pid), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                peak[0] = max(peak[0], tree_rss(ps))
            time.sleep(0.1)

    t = threading.Thread(target=sample)
    t.start()
    out, _ = proc.communicate()
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"{backend} with {per_round} clients failed")
    return json.loads(out.strip().splitlines()[-1])["round_s"], peak[0] / 2**20


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="10,100,1000")
    args = ap.parse_args()
    print("| clients/round | backend | s/round | peak memory (MiB) |\n|---|---|---|---|", flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        for backend in BACKENDS:
            seconds, mib = measure(size, backend, args.rounds)
            print(f"| {size} | {backend} | {seconds:.2f} | {mib:.0f} |", flush=True)


if __name__ == "__main__":
    main()
