"""A device: joins a shoal server, trains the tasks it is given, sends the results back.

The same :class:`~shoal.client.app.ClientApp` and update transforms as in simulation run
here, through :func:`~shoal.client.app.run_train`, so a model trained over the network
equals the simulated one for the same seed. The device keeps its own client state
(SCAFFOLD's control variate) across rounds. Every call has a deadline; a lost connection
is retried with exponential backoff and jitter, so a restarted server finds its devices
again on its own.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from shoal.client.app import ClientApp, run_evaluate, run_train
from shoal.client.state import ClientStateStore
from shoal.data.datasets import ClientData
from shoal.errors import ConfigError, ShoalError
from shoal.messages import EvalTask, TrainResult, TrainTask, decode, encode
from shoal.net.proto import shoal_pb2 as pb
from shoal.net.proto import shoal_pb2_grpc as rpc
from shoal.net.server import CHUNK_BYTES, chunk_stream
from shoal.secagg.protocol import SecAggClient
from shoal.secagg.transform import SecureAggregation
from shoal.transforms.base import UpdateTransform

log = logging.getLogger("shoal.client")


@dataclass(frozen=True)
class ClientTLS:
    ca: Path  # the CA that signed the server's certificate
    cert: Path | None = None  # this device's certificate (mutual TLS)
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        for p in (self.ca, self.cert, self.key):
            if p is not None and not Path(p).is_file():
                raise ConfigError(f"TLS file {p} does not exist")
        return grpc.ssl_channel_credentials(
            Path(self.ca).read_bytes(),
            Path(self.key).read_bytes() if self.key else None,
            Path(self.cert).read_bytes() if self.cert else None,
        )


@dataclass
class DeviceState:
    charging: bool = True
    unmetered: bool = True
    idle: bool = True
    battery: float = 1.0

    def message(self) -> pb.DeviceState:
        return pb.DeviceState(
            charging=self.charging, unmetered=self.unmetered, idle=self.idle, battery=self.battery
        )


class Device:
    def __init__(
        self,
        address: str,
        client_id: str,
        app: ClientApp,
        data: ClientData,
        *,
        transforms: Sequence[UpdateTransform] = (),
        run_seed: int = 0,
        tls: ClientTLS | None = None,
        token: str | None = None,
        state: DeviceState | None = None,
        call_timeout_s: float = 60.0,
        model_digest: str = "",  # ParamSpec.digest() of the local model; checked against the server's
        state_file: Path | None = None,  # where this device keeps its client state across restarts
    ) -> None:
        self.model_digest, self.state_file = model_digest, state_file
        self.client_id, self.app, self.data = client_id, app, data
        self.transforms, self.run_seed = list(transforms), run_seed
        self.state = state or DeviceState()
        self.call_timeout_s = call_timeout_s
        self.metadata = [("shoal-token", token)] if token else []
        opts = [
            ("grpc.max_receive_message_length", 4 * CHUNK_BYTES),
            ("grpc.max_send_message_length", 4 * CHUNK_BYTES),
        ]
        if tls is None:
            self.channel = grpc.insecure_channel(address, options=opts)
        else:
            self.channel = grpc.secure_channel(address, tls.credentials(), options=opts)
        self.stub = rpc.CoordinatorStub(self.channel)
        self.client_states = ClientStateStore()  # this device's own state, across rounds
        if state_file is not None:
            self.client_states.load(state_file, client_id)
        self.tasks_done = 0

    def _caller(self) -> pb.Caller:
        return pb.Caller(
            client_id=self.client_id, nonce=secrets.randbits(63), timestamp_ms=int(time.time() * 1000)
        )

    def join(self) -> pb.JoinReply:
        request = pb.JoinRequest(caller=self._caller(), state=self.state.message())
        reply: pb.JoinReply = self.stub.Join(request, timeout=self.call_timeout_s, metadata=self.metadata)
        if self.model_digest and reply.model_hash and reply.model_hash != self.model_digest:
            raise ConfigError(
                f"the server trains a different model (layout {reply.model_hash}, ours {self.model_digest}); "
                "use the server's config"
            )
        return reply

    def _fetch(self, wait_ms: int) -> TrainTask | EvalTask | bytes | str:
        """The next task, a secure-aggregation message (bytes), or "none" / "done"."""
        request = pb.TaskRequest(caller=self._caller(), wait_ms=wait_ms)
        stream = self.stub.GetTask(
            request, timeout=self.call_timeout_s + wait_ms / 1000, metadata=self.metadata
        )
        parts, total, kind = [], 0, ""
        for chunk in stream:
            if chunk.kind not in ("task", "secagg"):
                return str(chunk.kind)
            total, kind = chunk.total_bytes, chunk.kind
            parts.append(chunk.data)
        payload = b"".join(parts)
        if len(payload) != total:
            raise ConnectionError("task stream ended early")
        if kind == "secagg":
            return payload
        task = decode(payload)
        if isinstance(task, TrainTask | EvalTask) and task.client_id == self.client_id:
            return task
        raise ConnectionError("the server sent something other than a task for this device")

    def _put(self, payload: bytes, kind: str = "result") -> pb.PutReply:
        chunks: Iterator[pb.Chunk] = chunk_stream(kind, payload, self._caller())
        reply: pb.PutReply = self.stub.PutResult(chunks, timeout=self.call_timeout_s, metadata=self.metadata)
        return reply

    def step(self, wait_ms: int = 5000) -> str:
        """Ask for one task and answer it; returns "trained", "evaluated", "none" or "done"."""
        task = self._fetch(wait_ms)
        if isinstance(task, str):
            return task
        if isinstance(task, bytes):  # a secure-aggregation stage: this device's protocol half answers
            try:
                answer = self._secagg_half().handle(task)
            except (ShoalError, ValueError, KeyError) as exc:
                log.warning("secure aggregation message refused: %s", exc)
                answer = b""  # the server counts us out of this round
            self._put(answer, "secagg")
            return "protocol"
        state = self.client_states.get(self.client_id)
        if isinstance(task, TrainTask):
            trained = run_train(self.app, task, self.data, self.transforms, self.run_seed, state)
            reply, kind = self._put(encode(trained)), "trained"
            if reply.accepted and isinstance(trained, TrainResult):  # kept only if the server took it
                self.client_states.put(self.client_id, state)
                if self.state_file is not None:
                    self.client_states.save(self.state_file, self.client_id)
        else:
            reply, kind = self._put(encode(run_evaluate(self.app, task, self.data))), "evaluated"
        if not reply.accepted:
            log.warning("server refused our result for round %d: %s", task.round, reply.reason)
        self.tasks_done += 1
        return kind

    def _secagg_half(self) -> SecAggClient:
        for t in self.transforms:
            if isinstance(t, SecureAggregation):
                halves: dict[str, SecAggClient] = t.channel.devices
                if self.client_id not in halves:
                    halves[self.client_id] = SecAggClient()
                return halves[self.client_id]
        raise ValueError("the server runs secure aggregation but this device was not configured for it")

    def run(self, max_tasks: int | None = None, give_up_s: float = 600.0) -> int:
        """Serve tasks until the server says the run is done (or ``max_tasks``); reconnect
        with backoff, giving up after ``give_up_s`` without contact. Returns tasks done."""
        backoff, last_contact, joined = 0.2, time.monotonic(), False
        while max_tasks is None or self.tasks_done < max_tasks:
            try:
                if not joined:
                    self.join()
                    joined = True
                if self.step() == "done":
                    break
                backoff, last_contact = 0.2, time.monotonic()
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise ConfigError(
                        f"the server refused this device: {exc.details() if hasattr(exc, 'details') else exc}"
                    ) from None
                if code is grpc.StatusCode.FAILED_PRECONDITION:
                    joined = False  # the server restarted and forgot us: join again
                if time.monotonic() - last_contact > give_up_s:
                    raise ConnectionError(f"no contact with the server for {give_up_s:g} s") from None
                time.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 10.0)
        self.channel.close()
        return self.tasks_done
