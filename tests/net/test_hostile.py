"""Hostile peers against a real gRPC server on 127.0.0.1, with raw stubs (issue 11):
authentication before any read, per-peer slots, server deadlines, upload limits that
follow the model, chunk order, results judged at once, and devices that never die."""

from __future__ import annotations

import datetime
import json
import struct
import threading
import time

import grpc
import numpy as np
import pytest

import shoal
from shoal.client import TorchTrainer
from shoal.errors import ConfigError
from shoal.messages import MAGIC, EvalResult, EvalTask, Failure, TrainResult, TrainTask, encode
from shoal.net.auth import token_digest
from shoal.net.backend import GrpcBackend
from shoal.net.chunks import CHUNK_BYTES, chunk_stream
from shoal.net.client import Device
from shoal.net.proto import shoal_pb2 as pb
from shoal.net.proto import shoal_pb2_grpc as rpc
from shoal.net.server import start_server
from shoal.net.uploads import UploadRules, train_result_bytes
from shoal.runtime.validation import ResultLimits
from tests.net.attackers import ParkedDevices
from tests.net.procs import free_port

HP = TorchTrainer(lr=0.3, local_epochs=1, batch_size=16)
PARAMS = np.zeros(4, np.float32)


def serve(**kw):
    backend = GrpcBackend(**{"round_timeout_s": 20, **kw})
    address = f"127.0.0.1:{free_port()}"
    return backend, address, start_server(backend, address, None, insecure=True)


def stub(address, cid=None, token=None):
    channel = grpc.insecure_channel(address)
    metadata = tuple(m for m in (("shoal-client-id", cid), ("shoal-token", token)) if m[1] is not None)
    return rpc.CoordinatorStub(channel), metadata


def never(stop: threading.Event):
    """A request stream that sends nothing until ``stop`` is set."""
    stop.wait()
    yield from ()


def hand_task(backend, cid, task=None):
    """Queue a task for ``cid`` the way a round does; returns the thread and its outcome box."""
    task = task or TrainTask(1, cid, PARAMS, 1)
    box: dict[str, list] = {}
    thread = threading.Thread(target=lambda: box.update(out=backend.train([task])), daemon=True)
    thread.start()
    return thread, box


def fetch(s, metadata):
    """Take the outstanding task, as a device's long poll does."""
    chunks = list(s.GetTask(pb.TaskRequest(wait_ms=5000), timeout=10, metadata=metadata))
    assert chunks and chunks[0].kind == "task", chunks


def upload(backend, address, cid, chunks, rules_task=None):
    """Join ``cid``, hand it a task, fetch it, send ``chunks``; the reply and the round's outcome."""
    s, md = stub(address, cid)
    s.Join(pb.JoinRequest(state=pb.DeviceState(charging=True, unmetered=True, idle=True)), metadata=md)
    thread, box = hand_task(backend, cid, rules_task)
    fetch(s, md)
    reply = s.PutResult(iter(chunks), timeout=10, metadata=md)
    thread.join(timeout=30)
    return reply, box["out"][0]


def test_an_unauthenticated_upload_is_refused_before_any_byte_is_read():
    _, address, server = serve(tokens={"0": token_digest("s3cret")})
    stop = threading.Event()
    try:
        for cid, token in ((None, None), ("0", "guess"), ("1", "s3cret")):
            s, md = stub(address, cid, token)
            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                s.PutResult(never(stop), timeout=10, metadata=md)
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED, err.value
            assert time.monotonic() - start < 3  # refused at once, not when the stream ended
    finally:
        stop.set()
        server.stop(None)


def test_heartbeat_and_get_task_authenticate_before_they_answer():
    _, address, server = serve(tokens={"0": token_digest("s3cret")})
    try:
        s, md = stub(address, "ghost")  # unknown, and no token
        for call in (
            lambda: s.Heartbeat(pb.HeartbeatRequest(), timeout=5, metadata=md),
            lambda: list(s.GetTask(pb.TaskRequest(wait_ms=0), timeout=5, metadata=md)),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        s, md = stub(address, "0", "s3cret")  # authenticated but never joined
        assert not s.Heartbeat(pb.HeartbeatRequest(), timeout=5, metadata=md).known
    finally:
        server.stop(None)


def test_an_upload_without_an_outstanding_task_is_refused_before_any_byte_is_read():
    _, address, server = serve()
    stop = threading.Event()
    try:
        s, md = stub(address, "0")
        start = time.monotonic()
        reply = s.PutResult(never(stop), timeout=10, metadata=md)
        assert not reply.accepted and "no outstanding task" in reply.reason
        assert time.monotonic() - start < 3
    finally:
        stop.set()
        server.stop(None)


def test_one_peer_gets_a_few_slots_and_every_call_a_server_deadline():
    backend, address, server = serve(calls_per_peer=4, call_timeout_s=4.0)
    stop = threading.Event()
    try:
        s, md = stub(address, "0")
        s.Join(pb.JoinRequest(state=pb.DeviceState()), metadata=md)
        hand_task(backend, "0")
        fetch(s, md)
        # The peer's upload never sends a byte, and the peer set no deadline: the server's cuts it.
        idle = s.PutResult.future(never(stop), metadata=md)
        polls = [s.GetTask(pb.TaskRequest(wait_ms=30_000), metadata=md) for _ in range(3)]  # in flight
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as err:  # a fifth call while four are in flight
            s.Heartbeat(pb.HeartbeatRequest(), timeout=5, metadata=md)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as err:
            idle.result(timeout=10)
        assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        # another peer is served all along
        other, other_md = stub(address, "1")
        assert not other.Heartbeat(pb.HeartbeatRequest(), timeout=5, metadata=other_md).known
    finally:
        stop.set()
        backend.close()
        server.stop(None)
    for p in polls:
        p.cancel()


@pytest.mark.parametrize("bad", ["evil id", "../../etc", "x" * 129, ""])
def test_client_ids_outside_the_alphabet_are_refused(bad):
    backend, address, server = serve()
    try:
        s, md = stub(address, bad)
        with pytest.raises(grpc.RpcError) as err:
            s.Join(pb.JoinRequest(), timeout=5, metadata=md)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED and "not valid" in err.value.details()
        assert backend.available() == []
    finally:
        server.stop(None)
    with pytest.raises(ConfigError, match="not a valid client id"):
        Device(address, bad + "\n", None, None)  # type: ignore[arg-type]


def test_a_certificate_whose_common_name_is_no_valid_id_is_refused(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from shoal.net.certs import make_certs
    from shoal.net.tls import ClientTLS, TLSFiles

    certs = make_certs(tmp_path, ["127.0.0.1"], ["0"])
    ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "0\nINFO forged line")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    (tmp_path / "evil.pem").write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "evil.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    backend = GrpcBackend()
    address = f"127.0.0.1:{free_port()}"
    server = start_server(
        backend, address, TLSFiles(certs / "server.pem", certs / "server.key", certs / "ca.pem")
    )
    try:
        tls = ClientTLS(certs / "ca.pem", tmp_path / "evil.pem", tmp_path / "evil.key")
        channel = grpc.secure_channel(address, tls.credentials())
        with pytest.raises(grpc.RpcError) as err:
            rpc.CoordinatorStub(channel).Join(pb.JoinRequest(), timeout=5)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED and "not valid" in err.value.details()
    finally:
        server.stop(None)


def _with_metric(result: TrainResult, name: str, value: float) -> bytes:
    """``encode(result)`` with a metric the codec itself would refuse to write (NaN, inf)."""
    data = encode(result)
    (hlen,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8 : 8 + hlen])
    header["fields"]["metrics"][name] = value
    head = json.dumps(header).encode()  # allow_nan: what a hostile peer may send
    return MAGIC + struct.pack("<I", len(head)) + head + data[8 + hlen :]


def test_uploads_are_judged_when_they_arrive_and_refusals_are_the_rounds_failures():
    rules = UploadRules(ResultLimits(max_num_examples=100), num_params=4)
    backend, address, server = serve(rules=rules)
    ok = TrainResult(1, "0", 10, {"delta": np.ones(4, np.float32)}, {"train_loss": 0.5})
    cases = {
        "nan update": (encode(TrainResult(1, "0", 10, {"delta": np.full(4, np.nan, np.float32)})), "finite"),
        "wrong size": (encode(TrainResult(1, "0", 10, {"delta": np.ones(3, np.float32)})), "model's size"),
        "too many examples": (encode(TrainResult(1, "0", 10**9, {"delta": np.ones(4, np.float32)})), "cap"),
        "nan metric": (_with_metric(ok, "train_loss", float("nan")), "train_loss"),
        "someone else's": (encode(TrainResult(1, "1", 10, {"delta": np.ones(4, np.float32)})), "answer"),
    }
    try:
        for name, (payload, why) in cases.items():
            reply, out = upload(backend, address, "0", chunk_stream("result", payload))
            assert not reply.accepted and why in reply.reason, (name, reply.reason)
            assert isinstance(out, Failure) and out.kind.value == "rejected" and why in out.reason, name
        reply, out = upload(backend, address, "0", chunk_stream("result", encode(ok)))
        assert reply.accepted and isinstance(out, TrainResult)
    finally:
        server.stop(None)


def test_the_upload_limit_follows_the_model_and_is_checked_on_the_first_chunk():
    limit = train_result_bytes(4, ("delta",))
    honest = TrainResult(7, "x" * 128, 10**6, {"delta": np.ones(4, np.float32)}, {"train_loss": 1.0})
    assert len(encode(honest)) < limit < 100 << 10  # a 4-parameter model: about 64 KiB, not 1 GiB
    # SCAFFOLD's results carry a second vector of the model's size
    assert train_result_bytes(10**6, ("delta", "control_delta")) - train_result_bytes(10**6, ("delta",)) > 4e6
    backend, address, server = serve(rules=UploadRules(num_params=4))
    try:
        first = pb.Chunk(kind="result", index=0, count=1, total_bytes=limit + 1, data=b"x" * 100)
        reply, out = upload(backend, address, "0", [first])
        assert not reply.accepted and f"exceeds the limit of {limit}" in reply.reason
        assert out.kind.value == "rejected"
    finally:
        server.stop(None)


def test_chunks_must_come_in_order_with_one_count_and_full_pieces():
    backend, address, server = serve(rules=UploadRules(num_params=400_000))  # a 1.6 MB limit
    total = CHUNK_BYTES + 10
    good = list(chunk_stream("result", b"\0" * total))

    def chunk(i, count=2, size=None, total_bytes=total, kind="result"):
        size = size if size is not None else len(good[i].data)
        return pb.Chunk(kind=kind, index=i, count=count, total_bytes=total_bytes, data=b"\0" * size)

    broken = {
        "a gap": [chunk(0), pb.Chunk(kind="result", index=2, count=2, total_bytes=total, data=b"")],
        "a second chunk 0": [chunk(0), chunk(0)],
        "a changing count": [chunk(0), chunk(1, count=3)],
        "a count that does not fit the size": [chunk(0, count=5)],
        "a short piece": [chunk(0, size=1000), chunk(1)],
        "a changing kind": [chunk(0), chunk(1, kind="secagg")],
        "an early end": [chunk(0)],
    }
    try:
        for name, chunks in broken.items():
            reply, out = upload(backend, address, "0", chunks)
            assert not reply.accepted and "upload refused" in reply.reason, (name, reply.reason)
            assert out.kind.value == "rejected", name
    finally:
        server.stop(None)


def test_hundreds_of_waiting_devices_cost_no_threads_and_rounds_still_commit(fed_digits, small_mlp):
    backend, address, server = serve()
    threads_before = threading.active_count()
    try:
        with ParkedDevices(address, [f"parked-{i}" for i in range(600)], connections=10) as parked:
            deadline = time.monotonic() + 60
            while parked.polling < 600 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert parked.polling == 600
            honest = Device(address, "0", HP.build(small_mlp), fed_digits["0"])
            honest.join()
            threading.Thread(target=honest.run, kwargs={"max_tasks": 1}, daemon=True).start()
            start = time.monotonic()
            (out,) = backend.train([TrainTask(1, "0", shoal.params.from_module(small_mlp())[0], 1)])
            assert isinstance(out, TrainResult) and time.monotonic() - start < 10
            # 600 long polls in flight on the server, and no thread per call (the old server had
            # a pool of 64 threads: the honest device would have waited behind the parked ones)
            assert threading.active_count() - threads_before < 30
            backend.close()
    finally:
        server.stop(None)


class _Moody:
    """A ClientApp whose first training diverges, whose second raises, whose third is fine."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def train(self, task, data, state):
        self.calls += 1
        if self.calls == 1:
            result = self.inner.train(task, data, state)
            return TrainResult(task.round, task.client_id, result.num_examples, result.payload,
                               {"train_loss": float("nan")})  # fmt: skip
        if self.calls == 2:
            raise RuntimeError("out of memory on the device")
        return self.inner.train(task, data, state)

    def evaluate(self, task, data, state):
        return self.inner.evaluate(task, data)


def test_a_device_reports_its_own_failures_and_keeps_serving(fed_digits, small_mlp):
    backend, address, server = serve()
    try:
        d = Device(address, "0", _Moody(HP.build(small_mlp)), fed_digits["0"])
        d.join()
        worker = threading.Thread(target=d.run, kwargs={"max_tasks": 3}, daemon=True)
        worker.start()
        params = shoal.params.from_module(small_mlp())[0]
        outs = [backend.train([TrainTask(r, "0", params, r)])[0] for r in (1, 2, 3)]
        worker.join(timeout=20)
        assert [type(o).__name__ for o in outs] == ["Failure", "Failure", "TrainResult"]
        assert (
            outs[0].kind.value == "error" and "diverged" in outs[0].reason and "train_loss" in outs[0].reason
        )
        assert outs[1].kind.value == "error" and "out of memory on the device" in outs[1].reason
        assert d.tasks_done == 3 and not worker.is_alive()
    finally:
        server.stop(None)


def test_junk_answered_at_once_does_not_end_an_over_selected_round_early(fed_digits, small_mlp):
    backend, address, server = serve(commit_fraction=0.5)
    params = shoal.params.from_module(small_mlp())[0]
    box: dict[str, list] = {}
    try:
        raw = {c: stub(address, c) for c in "01"}
        for s, md in raw.values():
            s.Join(
                pb.JoinRequest(state=pb.DeviceState(charging=True, unmetered=True, idle=True)), metadata=md
            )
        honest = [Device(address, c, HP.build(small_mlp), fed_digits[c]) for c in "23"]
        for d in honest:
            d.join()
        tasks = [TrainTask(1, c, params, 1) for c in "0123"]
        round_ = threading.Thread(target=lambda: box.update(out=backend.train(tasks)), daemon=True)
        round_.start()
        for s, md in raw.values():  # two peers answer junk before the honest devices start
            fetch(s, md)
            assert not s.PutResult(chunk_stream("result", b"junk"), timeout=5, metadata=md).accepted
        for d in honest:
            threading.Thread(target=d.run, kwargs={"max_tasks": 1}, daemon=True).start()
        round_.join(timeout=30)
    finally:
        server.stop(None)
    assert [type(o).__name__ for o in box["out"]] == ["Failure", "Failure", "TrainResult", "TrainResult"]


def test_an_evaluation_a_device_forges_is_refused_and_costs_only_its_score():
    """Federated evaluation's answers are judged on arrival too: before, one without an
    accuracy reached the round loop's average and stopped the run."""
    backend, address, server = serve()
    forged = {
        "no accuracy": ({"loss": 0.1}, "no 'accuracy'"),
        "accuracy 7": ({"loss": 0.1, "accuracy": 7.0}, "outside [0, 1]"),
        "global accuracy -1": ({"loss": 0.1, "accuracy": 0.5, "global_accuracy": -1.0}, "outside [0, 1]"),
    }
    try:
        for name, (metrics, why) in forged.items():
            s, md = stub(address, "0")
            s.Join(
                pb.JoinRequest(state=pb.DeviceState(charging=True, unmetered=True, idle=True)), metadata=md
            )
            box: dict[str, list] = {}
            task = EvalTask(1, "0", PARAMS)
            thread = threading.Thread(
                target=lambda t=task, b=box: b.update(out=backend.evaluate([t])), daemon=True
            )
            thread.start()
            fetch(s, md)
            answer = encode(EvalResult(1, "0", 20, metrics))
            reply = s.PutResult(chunk_stream("result", answer), timeout=10, metadata=md)
            thread.join(timeout=30)
            assert not reply.accepted and why in reply.reason, (name, reply.reason)
            assert isinstance(box["out"][0], Failure), name
    finally:
        server.stop(None)
