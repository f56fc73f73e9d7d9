"""Who is calling: identity from a call's metadata or certificate, tokens, ids, per-peer limits.

The server decides who a call is from before it reads any message of it, from what the
call carries anyway: its metadata (``shoal-client-id``, ``shoal-token``) and, with mutual
TLS, the client certificate's common name. An unauthenticated call is refused at once, so
a stranger costs the server one metadata lookup; an authenticated peer may keep only a few
calls in flight (:class:`PeerLimiter`), so one device cannot hold the server's capacity.

Client ids are a short allow-listed alphabet wherever they enter (flags, token files,
certificates, metadata): an id with a newline or an escape would otherwise forge lines
in the server's log.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from shoal.errors import ConfigError

ID_HEADER = "shoal-client-id"
TOKEN_HEADER = "shoal-token"
TOKEN_ENV = "SHOAL_TOKEN"
CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
ID_RULE = "1 to 128 characters from A-Z a-z 0-9 . _ -"


def check_client_id(client_id: object, where: str = "client id") -> str:
    """``client_id`` if it is a valid id; a ConfigError naming the rule otherwise."""
    if not isinstance(client_id, str) or not CLIENT_ID.fullmatch(client_id):
        raise ConfigError(f"{where} {client_id!r} is not a valid client id: use {ID_RULE}")
    return client_id


def printable(text: str) -> str:
    """``text`` safe for one log line: control characters escaped (a reason may quote what
    a peer sent)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def token_digest(token: str) -> str:
    """What the server keeps of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def read_tokens(path: Path) -> dict[str, str]:
    """A token file: lines of ``<client id> <64 hex digits of sha256(token)>``; # comments."""
    if not path.is_file():
        raise ConfigError(f"token file {path} does not exist")
    tokens = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or line.lstrip().startswith("#"):
            continue
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[1]):
            raise ConfigError(f"{path}:{n}: expected '<client id> <64 hex digits of sha256(token)>'")
        tokens[check_client_id(parts[0], f"{path}:{n}:")] = parts[1].lower()
    return tokens


def read_token(path: Path | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """A device's token from a file (its first line) or the ``SHOAL_TOKEN`` environment
    variable; never from the command line, where every user of the machine can read it."""
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"token file {path} does not exist")
        lines = path.read_text().splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise ConfigError(f"token file {path} is empty; put the device's token on its first line")
        return token
    return environ.get(TOKEN_ENV) or None


class Refused(Exception):
    """A call the server will not serve; carries the gRPC status and the reason."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Authenticator:
    """Decides the client id of a call, or refuses it.

    ``tokens`` (client id -> sha256 hex of its token): every call must carry the matching
    token. ``enrolled``: only these ids may call (None: any id that authenticates)."""

    tokens: Mapping[str, str] | None = None
    enrolled: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for cid in (*(self.tokens or {}), *(self.enrolled or ())):
            check_client_id(cid, "enrolled client")

    def identify(
        self, metadata: Sequence[tuple[str, str | bytes]], common_names: Sequence[bytes] | None
    ) -> str:
        headers = {key: _text(value) for key, value in metadata}
        claimed = headers.get(ID_HEADER)
        if common_names:  # mutual TLS: the certificate names the device
            cid = _text(common_names[0])
            if claimed is not None and claimed != cid:
                raise Refused(
                    grpc.StatusCode.PERMISSION_DENIED, f"certificate is for {cid!r}, not {claimed!r}"
                )
        elif claimed is None:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, f"no client id: send it as {ID_HEADER} metadata")
        else:
            cid = claimed
        if not CLIENT_ID.fullmatch(cid):
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, f"client id {cid!r} is not valid: use {ID_RULE}")
        if self.tokens is not None:
            want = self.tokens.get(cid)
            got = token_digest(headers.get(TOKEN_HEADER, ""))
            if want is None or not hmac.compare_digest(want, got):
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, "unknown client or wrong token")
        if self.enrolled is not None and cid not in self.enrolled:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"client {cid!r} is not enrolled in this run")
        return cid


@dataclass
class PeerLimiter:
    """At most ``per_peer`` calls in flight from one client id. A device makes one call at
    a time; a few more cover a restarted device whose old long poll has not ended yet.
    Used from the server's event loop only, so it needs no lock."""

    per_peer: int = 4
    _active: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.per_peer < 1:
            raise ConfigError(f"per_peer must be >= 1, got {self.per_peer}")

    @contextlib.contextmanager
    def slot(self, client_id: str) -> Iterator[None]:
        held = self._active.get(client_id, 0)
        if held >= self.per_peer:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"client {client_id!r} already has {held} calls in flight (the limit); wait for them",
            )
        self._active[client_id] = held + 1
        try:
            yield
        finally:
            left = self._active[client_id] - 1
            if left:
                self._active[client_id] = left
            else:
                del self._active[client_id]

    def in_flight(self, client_id: str) -> int:
        return self._active.get(client_id, 0)
