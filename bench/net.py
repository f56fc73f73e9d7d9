"""The network path on loopback: round latency, throughput and bytes per device, and the
server's memory over many rounds.

A `GrpcBackend` server over mutual TLS and N devices (threads in this process, each with
its own gRPC channel and TLS session) run FedAvg rounds of the McMahan CNN (1,663,370
parameters, 6.7 MB a model) with one local step of batch 10, so a round's time is
almost all transport: the model streamed down in 1 MiB chunks to every device, the update
streamed up, decoded and validated. The floor is the same bytes through the local codec
(encode + decode) without any network. With --memory-rounds, a second run of many rounds
with 4 devices samples the server process's resident memory.

    .venv/bin/python bench/net.py [--clients 20] [--rounds 5] [--memory-rounds 200]
"""

from __future__ import annotations

import argparse
import functools
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

import shoal
from shoal.client import TorchTrainer
from shoal.data import iid
from shoal.messages import TrainTask, decode, encode
from shoal.models import mcmahan_cnn
from shoal.net.backend import GrpcBackend
from shoal.net.certs import make_certs
from shoal.net.client import Device
from shoal.net.server import start_server
from shoal.net.tls import ClientTLS, TLSFiles
from shoal.runtime import initial_params


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(clients: int, rounds: int, certs: Path, sample_memory: bool = False) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(clients * 20, 1, 28, 28, generator=g)
    central = shoal.data.LabeledData(
        "random", shoal.data.ArrayDataset(x, torch.randint(0, 10, (len(x),), generator=g)), None, 10
    )
    data = iid(central, clients, seed=0)
    model = functools.partial(mcmahan_cnn, (1, 28, 28), 10)
    hp = TorchTrainer(lr=0.01, local_steps=1, batch_size=10)
    backend = GrpcBackend(round_timeout_s=120)
    address = f"127.0.0.1:{_port()}"
    server = start_server(
        backend, address, TLSFiles(certs / "server.pem", certs / "server.key", certs / "ca.pem")
    )
    devices = [
        Device(address, cid, hp.build(model), data[cid],
               tls=ClientTLS(certs / "ca.pem", certs / f"client-{cid}.pem", certs / f"client-{cid}.key"))
        for cid in data.client_ids
    ]  # fmt: skip
    threads = [threading.Thread(target=d.run, daemon=True) for d in devices]
    for t in threads:
        t.start()
    backend.wait_for_clients(clients, 60)
    sim = shoal.Simulation(
        model, data, shoal.FedAvg(clients_per_round=clients), hp, backend=backend, eval_every=0
    )
    process = psutil.Process()
    rss: list[float] = []
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        record = sim.step(rounds)
        times.append(time.perf_counter() - start)
        assert record["clients_completed"] == clients, record
        if sample_memory:
            rss.append(process.memory_info().rss / 2**20)
    backend.close()
    for t in threads:
        t.join(timeout=30)
    server.stop(grace=None)
    last = sim.records[-1]
    return {
        "round_s": float(np.median(times[1:] or times)),
        "bytes_down": last["bytes_down"] / clients,
        "bytes_up": last["bytes_up"] / clients,
        "rss": rss,
    }


def codec_floor(clients: int) -> float:
    params, _ = initial_params(functools.partial(mcmahan_cnn, (1, 28, 28), 10), 0)
    start = time.perf_counter()
    for i in range(clients):
        decode(encode(TrainTask(1, str(i), params, i)))
        decode(encode(TrainTask(1, str(i), params, i)))  # the update is the same size up
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--memory-rounds", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(tmp, ["127.0.0.1"], [str(i) for i in range(max(args.clients, 4))])
        m = run(args.clients, args.rounds, certs)
        floor = codec_floor(args.clients)
        mb = (m["bytes_down"] + m["bytes_up"]) * args.clients / 1e6
        print(f"{args.clients} devices, McMahan CNN (6.7 MB), mutual TLS on loopback, {args.rounds} rounds")
        print(
            f"  round latency (median): {m['round_s']:.2f} s   codec floor for the same bytes: {floor:.2f} s"
        )
        print(f"  throughput: {mb / m['round_s']:.0f} MB/s   per device per round: "
              f"{m['bytes_down'] / 1e6:.2f} MB down, {m['bytes_up'] / 1e6:.2f} MB up")  # fmt: skip
        if args.memory_rounds:
            mem = run(4, args.memory_rounds, certs, sample_memory=True)["rss"]
            warm = mem[min(10, len(mem) - 1)]
            print(f"  process RSS over {args.memory_rounds} rounds, 4 devices (in this process too): "
                  f"after warm-up {warm:.0f} MiB, last {mem[-1]:.0f} MiB, max {max(mem):.0f} MiB, "
                  f"growth after warm-up {mem[-1] - warm:+.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
