"""The CKKS key holder as its own network party: ``shoal keyholder``.

Homomorphic aggregation's promise (the server never sees one site's update) needs the
secret key somewhere the server is not. In simulation the :class:`~shoal.he.ckks.KeyAuthority`
lives in the server's process; over the network it is this service, run by a party the
sites trust not to collude with the server (an ethics board, a consortium's IT, one of the
hospitals).

Keys. The first start makes a CKKS key pair in ``KEYDIR``: ``secret.ckks`` (mode 0600,
never leaves the machine) and ``public.ckks``, the public context with its parameters,
which the operator copies to the server and to every site out of band, as with a CA
certificate. Devices encrypt under the file they hold, never under a key the server
hands them: a server that swapped in its own key would otherwise read every update.
Later starts load the same keys, so a run can outlive a restart of the key holder.

One method, ``/shoal.he.v1.KeyHolder/DecryptSum``, takes ``round`` (u32), the number of
values (u32) and the framed ciphertexts (:func:`~shoal.he.ckks.frame`), and answers the
decrypted values as little-endian float64. Everything the server sends is hostile until
checked, in this order: the call must authenticate (the server's token or certificate,
before anything is read); gRPC refuses a request longer than ``max_values`` values'
ciphertexts could be before the handler runs; the header, the ciphertext count (one per
``slots`` values) and each ciphertext must parse. A refusal costs the caller that call;
the key holder keeps serving.

What it does not stop. It cannot tell a sum from one site's ciphertext: a server that
forwards a single update learns it. It does bound that to **one decryption a round**:
round numbers must increase (remembered in ``KEYDIR/rounds.json`` across restarts), so a
curious server cannot decrypt every site's update of a round, only one ciphertext of its
choosing. The guarantee is the usual one for HE aggregation: the key holder and the
server must not collude. Secure aggregation (``[secagg]``) needs no third party.
A server resumed after a crash may ask again for the round it was in; that round is
refused (its model stays as it was) and the next one goes on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from shoal.errors import ConfigError
from shoal.he.ckks import CKKSParams, KeyAuthority, KeyHolderError, unframe
from shoal.net.auth import ID_HEADER, TOKEN_HEADER, Authenticator, Refused, printable
from shoal.net.tls import ClientTLS, TLSFiles
from shoal.net.unary import serve_unary, unary_channel

log = logging.getLogger("shoal.keyholder")

METHOD = "/shoal.he.v1.KeyHolder/DecryptSum"
PUBLIC_MAGIC = b"SHOAL-CKKS-PUBLIC-1\n"
REQUEST_MAGIC = b"SKH1"
_HEADER = struct.Struct("<4sII")  # magic, round, number of values
SERVER_ID = "server"  # the id the server calls under; the key holder's token file names it
DEFAULT_MAX_VALUES = 2_000_000  # model parameters a sum may hold: 489 ciphertexts, ~160 MB at 8,192


def write_public(path: Path, params: CKKSParams, context: bytes) -> None:
    header = json.dumps(
        {
            "poly_modulus_degree": params.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(params.coeff_mod_bit_sizes),
            "scale_bits": params.scale_bits,
        }
    )
    path.write_bytes(PUBLIC_MAGIC + header.encode() + b"\n" + context)


def read_public(path: str | Path) -> tuple[CKKSParams, bytes]:
    """The key holder's public file: its CKKS parameters and public context."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"he.public_key {path} does not exist: start `shoal keyholder --out KEYDIR` and copy "
            "KEYDIR/public.ckks to the server and to every device"
        )
    data = path.read_bytes()
    head, _, context = data[len(PUBLIC_MAGIC) :].partition(b"\n")
    try:
        if not data.startswith(PUBLIC_MAGIC) or not context:
            raise ValueError("not a key holder's public file")
        fields = json.loads(head)
        params = CKKSParams(
            int(fields["poly_modulus_degree"]),
            tuple(int(b) for b in fields["coeff_mod_bit_sizes"]),
            int(fields["scale_bits"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"he.public_key {path} is not a key holder's public.ckks: {exc}") from None
    return params, context


def load_or_create(folder: Path, params: CKKSParams) -> KeyAuthority:
    """The key pair in ``folder``: loaded if it is there, made (and saved) if not."""
    secret, public = folder / "secret.ckks", folder / "public.ckks"
    if secret.exists():
        saved, _ = read_public(public)
        if saved != params:
            raise ConfigError(
                f"{folder} holds keys for {saved}, but the config asks for {params}: use another "
                "--out, or the config the keys were made for"
            )
        return KeyAuthority.from_secret(secret.read_bytes(), saved)
    folder.mkdir(parents=True, exist_ok=True)
    authority = KeyAuthority(params)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(authority.secret_context())
    write_public(public, params, authority.public_context)
    return authority


@dataclass
class KeyHolderService:
    """The handler of :data:`METHOD`: authenticate, bound, parse, decrypt once a round."""

    authority: KeyAuthority
    auth: Authenticator
    folder: Path
    max_values: int = DEFAULT_MAX_VALUES
    decryptions: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rounds = self.folder / "rounds.json"
        self.last_round = json.loads(self._rounds.read_text())["last"] if self._rounds.exists() else 0
        # a fresh encryption's size bounds every ciphertext: a sum of them is no longer
        self.max_ciphertext = 2 * len(self.authority.encrypt_zeros())

    def max_request_bytes(self) -> int:
        count = math.ceil(self.max_values / self.authority.params.slots)
        return _HEADER.size + 4 + count * (4 + self.max_ciphertext)

    def decrypt(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            names = context.auth_context().get("x509_common_name")
            caller = self.auth.identify(tuple(context.invocation_metadata() or ()), names)
            with self._lock:  # one at a time: the round check and its record stay in step
                reply = self._decrypt(request)
        except Refused as exc:
            log.warning("refused a call from %s: %s", context.peer(), printable(exc.reason))
            context.abort(exc.code, exc.reason)
        log.info("round %d: decrypted a sum for %s", self.last_round, caller)
        return reply

    def _decrypt(self, request: bytes) -> bytes:
        bad = grpc.StatusCode.INVALID_ARGUMENT
        if len(request) < _HEADER.size:
            raise Refused(bad, "request shorter than its header")
        magic, rnd, length = _HEADER.unpack_from(request)
        if magic != REQUEST_MAGIC:
            raise Refused(bad, "not a DecryptSum request")
        if not 1 <= length <= self.max_values:
            raise Refused(bad, f"asks for {length} values; this key holder decrypts 1..{self.max_values}")
        if rnd <= self.last_round:
            raise Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"round {rnd}: the key holder has decrypted round {self.last_round} and decrypts one sum a "
                "round, in increasing rounds",
            )
        framed = request[_HEADER.size :]
        try:
            parts = unframe(framed)
            want = math.ceil(length / self.authority.params.slots)
            if len(parts) != want:
                raise ValueError(f"{len(parts)} ciphertexts for {length} values; expected {want}")
            if any(len(p) > self.max_ciphertext for p in parts):
                raise ValueError(f"a ciphertext is over {self.max_ciphertext} bytes")
            values = self.authority.decrypt_sum(framed, length)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise Refused(bad, f"not a sum this key holder can decrypt: {exc}") from None
        self.last_round, self.decryptions = rnd, self.decryptions + 1
        tmp = self._rounds.with_suffix(".tmp")
        tmp.write_text(json.dumps({"last": rnd}))
        tmp.replace(self._rounds)  # atomic: a crash leaves the old record or the new one
        return values.astype("<f8").tobytes()


def serve(
    service: KeyHolderService, address: str, tls: TLSFiles | None, insecure: bool = False
) -> tuple[grpc.Server, int]:
    """Start serving on ``address`` ("host:port"); TLS unless ``insecure``. Returns the
    server and its port."""
    if tls is None and not insecure:
        raise ConfigError("the key holder needs TLS (--cert/--key) or --insecure for a local trial")
    return serve_unary(
        METHOD,
        service.decrypt,
        address,
        tls,
        receive_limit=service.max_request_bytes(),
        send_limit=8 * service.max_values + 1024,
        workers=4,
        max_concurrent=8,
        thread_prefix="shoal-keyholder",
    )


class RemoteKeyAuthority:
    """The server's line to ``shoal keyholder``: what
    :class:`~shoal.he.ckks.HomomorphicAggregation` decrypts its sums with over the network."""

    def __init__(
        self,
        address: str,
        public_key: str | Path,
        token: str | None,
        tls: ClientTLS | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self.params, self.public_context = read_public(public_key)
        self.timeout_s = timeout_s
        self.metadata: tuple[tuple[str, str], ...] = ((ID_HEADER, SERVER_ID),)
        if token:
            self.metadata += ((TOKEN_HEADER, token),)
        opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self.channel, self._call = unary_channel(address, METHOD, tls, opts)

    def decrypt_sum(self, framed: bytes, length: int, round: int = 0) -> np.ndarray:
        request = _HEADER.pack(REQUEST_MAGIC, round, length) + framed
        try:
            reply = self._call(request, timeout=self.timeout_s, metadata=self.metadata)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise KeyHolderError(f"the key holder refused round {round}: {code}: {details}") from None
        if len(reply) != 8 * length:
            raise KeyHolderError(f"the key holder answered {len(reply)} bytes for {length} values")
        return np.frombuffer(reply, dtype="<f8").copy()

    def close(self) -> None:
        self.channel.close()
