"""Split learning over gRPC: per batch, a device sends its activations and the server answers
with their gradients (U-shaped: the server's output, then the gradients), under the same
authentication as ``shoal server``.

One unary method, ``/shoal.split.v1.Split/Exchange``, carries one encoded split message each
way (:mod:`shoal.split.wire`); no generated protobuf is needed, because the payload is the
codec's bytes. Every call is identified before its message is read
(:class:`~shoal.net.auth.Authenticator`: the certificate's common name under mutual TLS,
or the id and token in the call's metadata), takes one of its peer's few slots, and its
message is bounded twice before use: gRPC refuses a request above the size the model allows
(:meth:`~shoal.split.session.CutLimits.max_message_bytes`) before the handler runs, and the
codec decodes under the same bound. The decoded message must name the caller, and the
server's :class:`~shoal.split.session.Session` then judges it. A bad message ends that
device's turn, with the reason in the answer; the server and the other devices go on.

The round loop (:func:`run_rounds`) runs on the caller's thread: it starts a round with the
devices that asked for a turn recently, and gives up on a device that is silent for
``idle_timeout_s`` or still busy at the round's deadline.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from shoal.client.trainer import evaluate_module
from shoal.data.datasets import ArrayDataset
from shoal.errors import ConfigError, WireFormatError
from shoal.net.auth import (
    ID_HEADER,
    TOKEN_HEADER,
    Authenticator,
    PeerLimiter,
    Refused,
    check_client_id,
    printable,
)
from shoal.net.tls import ClientTLS, TLSFiles
from shoal.net.unary import serve_unary, unary_channel
from shoal.runtime.history import Record
from shoal.split.device import SplitDevice
from shoal.split.errors import Refusal
from shoal.split.messages import Ack, SplitMessage, Wait
from shoal.split.server import SplitServer
from shoal.split.session import CutLimits
from shoal.split.wire import decode, encode

log = logging.getLogger("shoal.split")

METHOD = "/shoal.split.v1.Split/Exchange"
CALLS_PER_PEER = 2  # a device makes one call at a time; one more covers a restart


class _Slots:
    """:class:`PeerLimiter` made safe for a thread pool (it was written for one event loop)."""

    def __init__(self, per_peer: int) -> None:
        self._limiter, self._lock = PeerLimiter(per_peer), threading.Lock()

    @contextlib.contextmanager
    def slot(self, client_id: str) -> Iterator[None]:
        with self._lock:
            held = self._limiter.slot(client_id)
            held.__enter__()
        try:
            yield
        finally:
            with self._lock:
                held.__exit__(None, None, None)


@dataclass
class SplitService:
    """The handler of :data:`METHOD`: authenticate, bound, decode, hand to the server."""

    server: SplitServer
    auth: Authenticator
    per_peer: int = CALLS_PER_PEER
    bytes_up: int = 0
    bytes_down: int = 0
    last_seen: dict[str, float] = field(default_factory=dict)  # when each device last called
    told_done: set[str] = field(default_factory=set)  # devices that heard the run is over
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._slots = _Slots(self.per_peer)

    def exchange(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            names = context.auth_context().get("x509_common_name")
            cid = self.auth.identify(tuple(context.invocation_metadata() or ()), names)
            with self._slots.slot(cid):
                reply = encode(self._answer(cid, request))
        except Refused as exc:
            log.warning("refused a call from %s: %s", context.peer(), printable(exc.reason))
            context.abort(exc.code, exc.reason)
        with self._lock:
            self.bytes_up += len(request)
            self.bytes_down += len(reply)
        return reply

    def _answer(self, cid: str, request: bytes) -> SplitMessage:
        with self._lock:
            self.last_seen[cid] = time.monotonic()
        try:
            msg = decode(request, self.server.limits.max_message_bytes())
        except WireFormatError as exc:
            reason = f"unreadable message: {exc}"
            self.server.expire(cid, reason)
            return Ack(max(self.server.round, 0), cid, False, reason)
        reply = self.server.handle(msg, caller=cid)
        if isinstance(reply, Wait) and reply.done:
            with self._lock:
                self.told_done.add(cid)
        if isinstance(reply, Ack) and not reply.accepted:
            log.warning("client %s: %s", cid, printable(reply.reason))
        return reply

    def active(self, within_s: float) -> list[str]:
        """Devices that called in the last ``within_s`` seconds."""
        now = time.monotonic()
        with self._lock:
            return sorted(c for c, t in self.last_seen.items() if now - t <= within_s)

    def silent_for(self, cid: str) -> float:
        with self._lock:
            return time.monotonic() - self.last_seen.get(cid, 0.0)

    def take_bytes(self) -> tuple[int, int]:
        with self._lock:
            out = (self.bytes_up, self.bytes_down)
            self.bytes_up = self.bytes_down = 0
            return out


def serve(
    service: SplitService,
    address: str,
    tls: TLSFiles | None,
    insecure: bool = False,
    workers: int = 8,
) -> tuple[grpc.Server, int]:
    """Start serving ``service`` on ``address`` ("host:port"); TLS unless ``insecure``.
    Returns the server and its port."""
    if tls is None and not insecure:
        raise ConfigError(
            "the split server needs TLS (--cert/--key, and --ca for client certificates) or --insecure"
        )
    limit = service.server.limits.max_message_bytes()
    return serve_unary(
        METHOD,
        service.exchange,
        address,
        tls,
        receive_limit=limit,
        send_limit=limit,
        workers=workers,
        max_concurrent=4 * workers,
        thread_prefix="shoal-split",
    )


def run_rounds(
    service: SplitService,
    rounds: int,
    *,
    min_clients: int = 1,
    round_timeout_s: float = 600.0,
    idle_timeout_s: float = 30.0,
    wait_clients_s: float = 600.0,
    test: ArrayDataset | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> list[Record]:
    """Run ``rounds`` rounds with whichever devices call; returns one record per round."""
    server, records = service.server, []
    for r in range(rounds):
        _await_devices(service, min_clients, idle_timeout_s, wait_clients_s)
        server.begin_round(r, service.active(idle_timeout_s))
        _await_round(service, round_timeout_s, idle_timeout_s)
        outcome = server.finish_round()
        up, down = service.take_bytes()
        record: Record = {
            "round": r + 1,
            "clients_completed": len(outcome.accepted),
            "examples": outcome.examples,
        }
        record |= {"clients_failed": len(outcome.refused), "bytes_up": up, "bytes_down": down}
        record["refused"] = dict(outcome.refused)
        record |= {"server_flops": outcome.server_flops, "server_seconds": outcome.server_seconds}
        if test is not None:
            record["test_loss"], record["test_accuracy"] = evaluate_module(server.model(), test)
        records.append(record)
        if on_record is not None:
            on_record(record)
    server.finished = True
    return records


def linger(service: SplitService, within_s: float, max_s: float = 10.0) -> None:
    """After the last round: keep answering until every recently active device has heard that
    the run is over (or ``max_s`` passes), so devices end cleanly instead of retrying."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        with service._lock:
            told = set(service.told_done)
        if set(service.active(within_s)) <= told:
            return
        time.sleep(0.05)


def _await_devices(service: SplitService, min_clients: int, within_s: float, give_up_s: float) -> None:
    deadline = time.monotonic() + give_up_s
    while len(service.active(within_s)) < min_clients:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {min_clients} devices called within {give_up_s:g} s")
        time.sleep(0.05)


def _await_round(service: SplitService, round_timeout_s: float, idle_timeout_s: float) -> None:
    server = service.server
    deadline = time.monotonic() + round_timeout_s
    while not server.round_complete:
        late = time.monotonic() > deadline
        for cid in server.waiting_for():
            if late:
                server.expire(cid, f"the round's deadline of {round_timeout_s:g} s passed")
            elif service.silent_for(cid) > idle_timeout_s:
                server.expire(cid, f"silent for more than {idle_timeout_s:g} s")
        time.sleep(0.01)


class SplitNetDevice:
    """A device of a split-learning run over gRPC: asks for turns and trains them until the
    server says the run is done. It never dies of a refused or broken turn."""

    def __init__(
        self,
        address: str,
        client_id: str,
        device: SplitDevice,
        data: ArrayDataset,
        limits: CutLimits,
        *,
        tls: ClientTLS | None = None,
        token: str | None = None,
        call_timeout_s: float = 60.0,
    ) -> None:
        self.client_id = check_client_id(client_id)
        self.device, self.data, self.call_timeout_s = device, data, call_timeout_s
        self.max_reply = limits.max_message_bytes()  # the server sends nothing bigger than we may
        self.metadata: tuple[tuple[str, str], ...] = ((ID_HEADER, client_id),)
        if token:
            self.metadata += ((TOKEN_HEADER, token),)
        opts = [("grpc.max_receive_message_length", self.max_reply)]
        opts.append(("grpc.max_send_message_length", self.max_reply))
        self.channel, self._call = unary_channel(address, METHOD, tls, opts)

    def send(self, msg: SplitMessage) -> SplitMessage:
        reply = self._call(encode(msg), timeout=self.call_timeout_s, metadata=self.metadata)
        try:
            return decode(reply, self.max_reply)
        except WireFormatError as exc:
            raise Refusal(f"the server's answer is unreadable: {exc}") from exc

    def run(self, give_up_s: float = 120.0) -> int:
        """Serve turns until the run is done; returns the turns this device completed."""
        turns, backoff, last_contact = 0, 0.1, time.monotonic()
        try:
            while True:
                try:
                    got = self.device.request_turn(self.client_id, self.send)
                    last_contact, backoff = time.monotonic(), 0.1
                    if isinstance(got, Wait):
                        if got.done:
                            return turns
                        time.sleep(got.retry_ms / 1000)
                        continue
                    self.device.train_turn(got, self.data, self.send)
                    turns += 1
                except Refusal as exc:  # the turn is lost, not the device
                    log.warning("turn ended: %s", exc.reason)
                    time.sleep(backoff)
                except grpc.RpcError as exc:
                    self._lost(exc, last_contact, give_up_s)
                    time.sleep(backoff)
                    backoff = min(2 * backoff, 5.0)
        finally:
            self.channel.close()

    def _lost(self, exc: grpc.RpcError, last_contact: float, give_up_s: float) -> None:
        code = exc.code() if hasattr(exc, "code") else None
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            details = exc.details() if hasattr(exc, "details") else exc
            raise ConfigError(f"the server refused this device: {details}") from None
        if time.monotonic() - last_contact > give_up_s:
            raise ConnectionError(f"no contact with the server for {give_up_s:g} s") from None


__all__ = ["METHOD", "SplitNetDevice", "SplitService", "linger", "run_rounds", "serve"]
