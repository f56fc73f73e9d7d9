"""The coordinating server: a gRPC service in front of a :class:`~shoal.runtime.backend.Backend`.

:class:`GrpcBackend` is what the round loop talks to, exactly like the in-process or Ray
backends: ``train(tasks)`` queues each task for its device, waits until every device has
answered or the round's deadline passes, and returns results and ``Failure(timeout)``s.
The gRPC servicer is the other face of the same object: devices join, heartbeat with
their state, long-poll for a task (streamed down in chunks) and stream their result up.

Every call is authenticated (the mutual-TLS certificate's common name, or a per-device
token) and carries a fresh nonce: a replayed call is refused. Payloads use shoal's safe
wire format; sizes are checked before anything is buffered and every result is decoded,
validated and matched to a task the device actually holds, so a broken or hostile client
costs only its own update and the server keeps serving.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from shoal.errors import ConfigError, WireFormatError
from shoal.messages import (
    EvalResult,
    EvalTask,
    Failure,
    FailureKind,
    TrainResult,
    TrainTask,
    decode,
    encode,
)
from shoal.net.proto import shoal_pb2 as pb
from shoal.net.proto import shoal_pb2_grpc as rpc
from shoal.net.registry import Registry
from shoal.runtime.backend import Backend

log = logging.getLogger("shoal.server")

CHUNK_BYTES = 1 << 20  # 1 MiB pieces: far below gRPC's 4 MB default message limit
CLOCK_SKEW_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class TLSFiles:
    """PEM files. With ``ca`` set the server requires client certificates from that CA."""

    cert: Path
    key: Path
    ca: Path | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        for p in (self.cert, self.key, self.ca):
            if p is not None and not Path(p).is_file():
                raise ConfigError(f"TLS file {p} does not exist; make a test set with: shoal certs DIR")
        pair = [(Path(self.key).read_bytes(), Path(self.cert).read_bytes())]
        if self.ca is None:
            return grpc.ssl_server_credentials(pair)
        return grpc.ssl_server_credentials(pair, Path(self.ca).read_bytes(), require_client_auth=True)


@dataclass(frozen=True)
class EligibilityPolicy:
    """Which devices may be picked (the defaults of production keyboards: charging, on
    unmetered Wi-Fi, idle) and how fresh their last heartbeat must be."""

    require_charging: bool = True
    require_unmetered: bool = True
    require_idle: bool = True
    min_battery: float = 0.0
    heartbeat_timeout_s: float = 60.0

    def eligible(self, state: pb.DeviceState) -> bool:
        return (
            (state.charging or not self.require_charging)
            and (state.unmetered or not self.require_unmetered)
            and (state.idle or not self.require_idle)
            and state.battery >= self.min_battery
        )


@dataclass
class _Device:
    state: pb.DeviceState
    last_seen: float


@dataclass
class _Pending:
    task: TrainTask | EvalTask | bytes  # bytes: a secure-aggregation protocol message
    sent: bool = False
    outcome: TrainResult | EvalResult | Failure | bytes | None = None


@dataclass
class NetworkChannel:
    """Secure aggregation's channel over the network: each call is one message to a device
    through :meth:`GrpcBackend.exchange`. Devices hold their own protocol halves."""

    backend: GrpcBackend
    timeout_s: float = 30.0

    def open_round(self, client_ids: Sequence[str]) -> None:
        pass  # every device makes its own keys when the setup message reaches it

    def gone(self, client_id: str, stage: Any) -> bool:
        return False

    def call(self, client_id: str, message: bytes) -> bytes | None:
        return self.backend.exchange(client_id, message, self.timeout_s)


class Refused(Exception):
    """A call the server will not serve; carries the gRPC status and the reason."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class GrpcBackend(rpc.CoordinatorServicer, Backend):  # type: ignore[misc]
    """A Backend whose clients are remote devices; also the gRPC servicer they call."""

    def __init__(
        self,
        *,
        round_timeout_s: float = 60.0,
        policy: EligibilityPolicy = EligibilityPolicy(),
        tokens: Mapping[str, str] | None = None,  # client id -> sha256 hex of its token
        expected_clients: Sequence[str] | None = None,  # None: any authenticated client
        max_result_bytes: int = 1 << 30,
        model_hash: str = "",
        run_id: str = "",
        registry: Registry | None = None,
        commit_fraction: float = 1.0,  # a round returns once this share of its tasks answered
    ) -> None:
        if not 0 < commit_fraction <= 1:
            raise ConfigError(f"commit_fraction must be in (0, 1], got {commit_fraction}")
        self.registry, self.commit_fraction = registry, commit_fraction
        self.round_timeout_s, self.policy = round_timeout_s, policy
        self.tokens = dict(tokens) if tokens is not None else None
        self.expected = set(expected_clients) if expected_clients is not None else None
        self.max_result_bytes, self.model_hash, self.run_id = max_result_bytes, model_hash, run_id
        self._devices: dict[str, _Device] = {}
        self._pending: dict[str, _Pending] = {}  # client id -> its one outstanding task
        self._nonces: dict[str, dict[int, float]] = {}  # client id -> recent nonce -> when seen
        self._told: set[str] = set()  # devices told the run is over
        self._cond = threading.Condition()
        self._closed = False

    # -- the Backend face ---------------------------------------------------------------------
    def available(self) -> list[str]:
        """Devices that joined, are eligible by policy and heartbeat recently, in id order."""
        now = time.monotonic()
        with self._cond:
            return sorted(
                cid
                for cid, d in self._devices.items()
                if now - d.last_seen <= self.policy.heartbeat_timeout_s and self.policy.eligible(d.state)
            )

    def wait_for_clients(self, count: int, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while len(self.available()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.available()

    def _dispatch(self, tasks: Sequence[TrainTask | EvalTask]) -> list[Any]:
        with self._cond:
            for t in tasks:
                self._pending[t.client_id] = _Pending(t)
            self._cond.notify_all()
            deadline = time.monotonic() + self.round_timeout_s
            enough = math.ceil(self.commit_fraction * len(tasks))  # over-selection: the first m answers
            while (
                not self._closed
                and sum(self._pending[t.client_id].outcome is not None for t in tasks) < enough
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(timeout=min(left, 0.5))
            in_time = time.monotonic() < deadline and not self._closed
            out: list[Any] = []
            for t in tasks:
                p = self._pending.pop(t.client_id)
                if p.outcome is not None:
                    out.append(p.outcome)
                    continue
                if in_time:
                    why = "not needed: enough devices answered first (over-selection)"
                else:
                    why = (
                        "never fetched its task" if not p.sent else "did not answer"
                    ) + f" in {self.round_timeout_s:g} s"
                out.append(Failure(t.round, t.client_id, FailureKind.TIMEOUT, why))
            return out

    def exchange(self, client_id: str, message: bytes, timeout_s: float) -> bytes | None:
        """Deliver one protocol message to a device and wait for its answer (secure
        aggregation's key and unmasking stages); None if it does not answer in time."""
        with self._cond:
            if client_id in self._pending or client_id not in self._devices:
                return None
            self._pending[client_id] = p = _Pending(message)
            self._cond.notify_all()
            deadline = time.monotonic() + timeout_s
            while p.outcome is None and not self._closed and time.monotonic() < deadline:
                self._cond.wait(timeout=min(deadline - time.monotonic(), 0.5))
            self._pending.pop(client_id, None)
            return p.outcome if isinstance(p.outcome, bytes) else None

    def train(self, tasks: Sequence[TrainTask]) -> list[TrainResult | Failure]:
        return self._dispatch(tasks)

    def evaluate(self, tasks: Sequence[EvalTask]) -> list[EvalResult | Failure]:
        return self._dispatch(tasks)

    def close(self) -> None:
        """End the run: every device that asks for work from now on is told it is done."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_until_told(self, timeout_s: float) -> None:
        """After :meth:`close`, give devices (some may be in backoff) time to hear "done"."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._cond:
                if set(self._devices) <= self._told:
                    return
            time.sleep(0.1)

    def state_dict(self) -> dict[str, Any]:
        return {}  # devices keep their own state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # -- authentication -----------------------------------------------------------------------
    def _authenticate(self, caller: pb.Caller, context: grpc.ServicerContext) -> str:
        cid = caller.client_id
        if not cid or len(cid) > 256:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "missing or oversized client id")
        names = context.auth_context().get("x509_common_name")
        if names is not None and names[0].decode() != cid:
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED, f"certificate is for {names[0].decode()!r}, not {cid!r}"
            )
        if self.tokens is not None:
            sent = dict(context.invocation_metadata()).get("shoal-token", "")
            want = self.tokens.get(cid)
            got = hashlib.sha256(str(sent).encode()).hexdigest()
            if want is None or not hmac.compare_digest(want, got):
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, "unknown client or wrong token")
        if self.expected is not None and cid not in self.expected:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"client {cid!r} is not enrolled in this run")
        now_ms = time.time() * 1000
        if abs(now_ms - caller.timestamp_ms) > CLOCK_SKEW_MS:
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED, "timestamp outside the accepted window (clock skew?)"
            )
        with self._cond:  # only authenticated callers get a nonce book
            seen = self._nonces.setdefault(cid, {})
            horizon = time.monotonic() - 2 * CLOCK_SKEW_MS / 1000
            if len(seen) > 10_000:
                self._nonces[cid] = seen = {n: t for n, t in seen.items() if t >= horizon}
            if caller.nonce in seen:
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, "replayed request (nonce already used)")
            seen[caller.nonce] = time.monotonic()
        return cid

    def _guard(self, context: grpc.ServicerContext, caller: pb.Caller) -> str:
        try:
            return self._authenticate(caller, context)
        except Refused as exc:
            log.warning("refused %s from %s: %s", caller.client_id or "?", context.peer(), exc.reason)
            context.abort(exc.code, exc.reason)
            raise  # abort raises; this line satisfies type checkers

    # -- the gRPC face ------------------------------------------------------------------------
    def Join(self, request: pb.JoinRequest, context: grpc.ServicerContext) -> pb.JoinReply:
        cid = self._guard(context, request.caller)
        with self._cond:
            self._devices[cid] = _Device(request.state, time.monotonic())
        if self.registry is not None:
            self.registry.seen(cid, request.state, joined=True)
        log.info("client %s joined from %s", cid, context.peer())
        return pb.JoinReply(run_id=self.run_id, model_hash=self.model_hash, heartbeat_ms=10_000)

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatReply:
        cid = request.caller.client_id
        if cid not in self._devices:
            return pb.HeartbeatReply(known=False)
        self._guard(context, request.caller)
        with self._cond:
            self._devices[cid].state, self._devices[cid].last_seen = request.state, time.monotonic()
        if self.registry is not None:
            self.registry.seen(cid, request.state)
        return pb.HeartbeatReply(known=True)

    def GetTask(self, request: pb.TaskRequest, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:
        cid = request.caller.client_id
        if cid not in self._devices:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "join first")
        self._guard(context, request.caller)
        wait = min(request.wait_ms, 30_000) / 1000
        with self._cond:
            self._devices[cid].last_seen = time.monotonic()
            deadline = time.monotonic() + wait
            while not self._closed:
                p = self._pending.get(cid)
                if p is not None and not p.sent:
                    p.sent = True
                    kind = "secagg" if isinstance(p.task, bytes) else "task"
                    payload = p.task if isinstance(p.task, bytes) else encode(p.task)
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    p = None
                    break
                self._cond.wait(timeout=left)
            else:
                p = None
        if p is None:
            if self._closed:
                with self._cond:
                    self._told.add(cid)
            yield pb.Chunk(kind="done" if self._closed else "none", retry_after_ms=500)
            return
        yield from chunk_stream(kind, payload)

    def PutResult(self, request_iterator: Iterator[pb.Chunk], context: grpc.ServicerContext) -> pb.PutReply:
        parts: list[bytes] = []
        first = next(request_iterator, None)
        if first is None or first.kind not in ("result", "secagg"):
            return pb.PutReply(accepted=False, reason="expected result chunks")
        cid = self._guard(context, first.caller)
        if first.total_bytes > self.max_result_bytes:
            log.warning("client %s announced %d bytes: refused", cid, first.total_bytes)
            return pb.PutReply(
                accepted=False, reason=f"result of {first.total_bytes} bytes exceeds the limit"
            )
        size = 0
        for chunk in _chain(first, request_iterator):
            size += len(chunk.data)
            if size > first.total_bytes or chunk.kind != first.kind:
                return pb.PutReply(accepted=False, reason="chunks do not match the announced result")
            parts.append(chunk.data)
        if size != first.total_bytes:
            return pb.PutReply(accepted=False, reason="result truncated")
        if first.kind == "secagg":  # the protocol validates its own messages
            with self._cond:
                p = self._pending.get(cid)
                if p is None or not isinstance(p.task, bytes) or not p.sent or p.outcome is not None:
                    return pb.PutReply(
                        accepted=False, reason="no outstanding protocol message for this client"
                    )
                p.outcome = b"".join(parts)
                self._cond.notify_all()
            return pb.PutReply(accepted=True)
        try:
            msg = decode(b"".join(parts), max_bytes=self.max_result_bytes)
        except WireFormatError as exc:
            log.warning("client %s sent a malformed result: %s", cid, exc)
            return pb.PutReply(accepted=False, reason=f"malformed result: {exc}")
        with self._cond:
            p = self._pending.get(cid)
            if p is None or isinstance(p.task, bytes) or not p.sent or p.outcome is not None:
                return pb.PutReply(accepted=False, reason="no outstanding task for this client")
            if (
                not isinstance(msg, TrainResult | EvalResult | Failure)
                or msg.client_id != cid
                or msg.round != p.task.round
            ):
                return pb.PutReply(accepted=False, reason="result does not answer this client's task")
            if isinstance(p.task, TrainTask) == isinstance(msg, EvalResult):
                return pb.PutReply(accepted=False, reason="result of the wrong kind")
            p.outcome = msg
            self._devices[cid].last_seen = time.monotonic()
            self._cond.notify_all()
        return pb.PutReply(accepted=True)


def _chain(first: pb.Chunk, rest: Iterator[pb.Chunk]) -> Iterator[pb.Chunk]:
    yield first
    yield from rest


def chunk_stream(kind: str, payload: bytes, caller: pb.Caller | None = None) -> Iterator[pb.Chunk]:
    count = max(1, -(-len(payload) // CHUNK_BYTES))
    for i in range(count):
        yield pb.Chunk(
            kind=kind,
            index=i,
            count=count,
            total_bytes=len(payload),
            data=payload[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES],
            caller=caller if i == 0 else None,
        )


def start_server(
    backend: GrpcBackend, address: str, tls: TLSFiles | None, insecure: bool = False
) -> grpc.Server:
    """Serve ``backend`` on ``address`` ("host:port"); TLS unless ``insecure`` is set explicitly."""
    if tls is None and not insecure:
        raise ConfigError(
            "the server needs TLS (--cert/--key, and --ca for client certificates) or --insecure"
        )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64),
        options=[
            ("grpc.max_receive_message_length", 4 * CHUNK_BYTES),
            ("grpc.max_send_message_length", 4 * CHUNK_BYTES),
        ],
    )
    rpc.add_CoordinatorServicer_to_server(backend, server)
    port = (
        server.add_secure_port(address, tls.server_credentials())
        if tls
        else server.add_insecure_port(address)
    )
    if port == 0:
        raise ConfigError(f"cannot listen on {address}: in use, or not an address of this machine")
    server.start()
    return server
