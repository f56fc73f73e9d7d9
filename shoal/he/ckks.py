"""Homomorphic aggregation: clients encrypt, the server adds ciphertexts, a key holder
decrypts only the sum.

Trust model. A :class:`KeyAuthority` (a separate process or party, or a designated
client) makes a CKKS key pair and publishes only the public context. Clients encrypt
their updates under it; the server, which holds the public context alone, adds the
ciphertexts (it cannot decrypt: TenSEAL refuses without the secret key) and sends the
encrypted sum to the authority, which returns the decrypted sum. The server never sees
an individual update in the clear, and the authority sees only what the server sends it:
the guarantee holds as long as the two do not collude (a server that forwarded a single
client's ciphertext to an authority that decrypted it would learn that update). Secure
aggregation (``shoal.secagg``) needs no such third party; HE needs no client interaction
beyond one message, and no threshold of survivors.

Precision. CKKS is approximate: with a 2^40 scale an update entry survives encryption,
addition over hundreds of clients and decryption to within about 1e-7 (measured in the
tests and ``bench/he.py``). Cost: a ciphertext holds ``poly_modulus_degree / 2`` values
(4,096 at 8,192) in about 330 KB, so an update grows about 20x on the wire.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from shoal.errors import ConfigError
from shoal.messages import Failure, FailureKind, Scalar, TrainResult
from shoal.transforms.base import TransformContext, UpdateTransform, merged_result

CIPHERTEXT = "he_ciphertext"  # payload key: the client's encrypted update, framed as bytes


def _tenseal() -> Any:
    try:
        import tenseal
    except ImportError:
        raise ConfigError('homomorphic aggregation needs TenSEAL: pip install "shoal[he]"') from None
    return tenseal


@dataclass(frozen=True)
class CKKSParams:
    poly_modulus_degree: int = 8192  # slots = half of it; 8192 gives 128-bit security with these moduli
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60)
    scale_bits: int = 40

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2


def frame(chunks: Sequence[bytes]) -> bytes:
    """Several serialized ciphertexts as one byte string: count, lengths, bodies."""
    return struct.pack(f"<I{len(chunks)}I", len(chunks), *(len(c) for c in chunks)) + b"".join(chunks)


def unframe(data: bytes) -> list[bytes]:
    if len(data) < 4:
        raise ValueError("ciphertext frame too short")
    (count,) = struct.unpack("<I", data[:4])
    if 4 + 4 * count > len(data):
        raise ValueError("ciphertext frame header is out of bounds")
    sizes = struct.unpack(f"<{count}I", data[4 : 4 + 4 * count])
    if 4 + 4 * count + sum(sizes) != len(data):
        raise ValueError("ciphertext frame lengths do not add up")
    out, pos = [], 4 + 4 * count
    for size in sizes:
        out.append(data[pos : pos + size])
        pos += size
    return out


class KeyHolderError(Exception):
    """The key holder did not decrypt a sum (unreachable, or it refused the request)."""


class Decryptor(Protocol):
    """What the server half decrypts its sum with: the key holder, in this process
    (:class:`KeyAuthority`) or across the network (:class:`~shoal.he.keyholder.RemoteKeyAuthority`)."""

    params: CKKSParams
    public_context: bytes

    def decrypt_sum(self, framed: bytes, length: int, round: int = 0) -> np.ndarray: ...


class KeyAuthority:
    """Holds the secret key; decrypts aggregates and nothing else it is not sent.
    ``secret``: a saved :meth:`secret_context` to load instead of making new keys."""

    def __init__(self, params: CKKSParams = CKKSParams(), secret: bytes | None = None) -> None:
        ts = _tenseal()
        self.params = params
        if secret is None:
            made = ts.context(
                ts.SCHEME_TYPE.CKKS,
                poly_modulus_degree=params.poly_modulus_degree,
                coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
            )
            made.global_scale = 2.0**params.scale_bits
        else:
            made = ts.context_from(secret)
            if not made.is_private():
                raise ConfigError("the saved key holds no secret key: it is a public context")
        public = made.copy()
        public.make_context_public()  # drops the secret key: this is what everyone else gets
        self.public_context: bytes = public.serialize()
        self._secret = made
        self.decryptions = 0

    @classmethod
    def from_secret(cls, secret: bytes, params: CKKSParams) -> KeyAuthority:
        return cls(params, secret)

    def secret_context(self) -> bytes:
        """The whole context, secret key included: for the key holder's own disk only."""
        data: bytes = self._secret.serialize(save_secret_key=True)
        return data

    def encrypt_zeros(self) -> bytes:
        """One full ciphertext of zeros: how big a ciphertext is under these parameters."""
        data: bytes = _tenseal().ckks_vector(self._secret, [0.0] * self.params.slots).serialize()
        return data

    def decrypt_sum(self, framed: bytes, length: int, round: int = 0) -> np.ndarray:
        ts = _tenseal()
        parts = [np.asarray(ts.ckks_vector_from(self._secret, c).decrypt()) for c in unframe(framed)]
        self.decryptions += 1
        values = np.concatenate(parts) if parts else np.zeros(0)
        if values.shape != (length,):
            raise ValueError(f"the aggregate holds {values.size} values, expected {length}")
        return values


@dataclass
class HomomorphicAggregation(UpdateTransform):
    """The update transform: encrypt on the device, add on the server, decrypt the sum only."""

    authority: Decryptor | None  # the server's line to the key holder; never shipped to devices
    public_context: bytes = b""
    slots: int = 0
    _public_ctx: Any = field(default=None, init=False, repr=False)
    _metrics: dict[str, Scalar] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.authority is not None:
            self.public_context, self.slots = self.authority.public_context, self.authority.params.slots
        if not self.public_context or self.slots < 1:
            raise ConfigError("homomorphic aggregation needs a key authority or its public context")

    def __getstate__(self) -> dict[str, Any]:
        # Workers and devices get the public context only: never the authority (it holds the secret key).
        return {**self.__dict__, "authority": None, "_public_ctx": None}

    def _public(self) -> Any:
        """The public context, deserialized once per process (it carries no secret key)."""
        if self._public_ctx is None:
            self._public_ctx = _tenseal().context_from(self.public_context)
        return self._public_ctx

    def client_apply(self, result: TrainResult, ctx: TransformContext) -> TrainResult:
        ts, public, slots = _tenseal(), self._public(), self.slots
        delta = result.payload["delta"].astype(np.float64)
        chunks = [
            ts.ckks_vector(public, delta[i : i + slots]).serialize() for i in range(0, delta.size, slots)
        ]
        return replace(result, payload={CIPHERTEXT: np.frombuffer(frame(chunks), dtype=np.uint8)})

    def server_apply(
        self, results: Sequence[TrainResult], ctx: TransformContext
    ) -> list[TrainResult | Failure]:
        ts, public = _tenseal(), self._public()
        total: list[Any] | None = None
        counted: list[TrainResult] = []
        out: list[TrainResult | Failure] = []
        for r in results:
            try:
                vectors = [ts.ckks_vector_from(public, c) for c in unframe(r.payload[CIPHERTEXT].tobytes())]
                if total is not None and len(vectors) != len(total):
                    raise ValueError("a different number of ciphertexts than the others")
            except (KeyError, ValueError, RuntimeError, TypeError) as exc:
                out.append(
                    Failure(r.round, r.client_id, FailureKind.REJECTED, f"not a usable ciphertext: {exc}")
                )
                continue
            total = vectors if total is None else [a + b for a, b in zip(total, vectors, strict=True)]
            counted.append(r)
        if total is None:
            return out
        if self.authority is None:
            raise ConfigError("the server half of homomorphic aggregation needs the key authority")
        try:
            summed = self.authority.decrypt_sum(
                frame([v.serialize() for v in total]), ctx.num_params, ctx.round
            )
        except (KeyHolderError, ValueError) as exc:  # no sum this round: every update in it is lost
            reason = f"the key holder did not decrypt the sum: {exc}"
            return [Failure(r.round, r.client_id, FailureKind.REJECTED, reason) for r in counted] + out
        mean = (summed / len(counted)).astype(np.float32)
        self._metrics = {"he_ciphertext_bytes": int(np.mean([r.payload[CIPHERTEXT].size for r in counted]))}
        return [merged_result(ctx.round, "he-aggregate", counted, mean), *out]

    def payload_bytes(self, num_params: int) -> int:
        """Ciphertexts for ``num_params`` values, each within twice a fresh one's size."""
        fresh = len(_tenseal().ckks_vector(self._public(), [0.0] * self.slots).serialize())
        count = -(-num_params // self.slots)
        return 4 + count * (4 + 2 * fresh)

    def round_metrics(self) -> dict[str, Scalar]:
        return dict(self._metrics)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
