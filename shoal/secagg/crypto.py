"""The primitives of secure aggregation, all from ``cryptography``.

- Signatures: Ed25519, a fresh key per round, for the ConsistencyCheck (Bonawitz et al.
  2017, Fig. 4, Round 3).
- Key agreement: X25519; every shared secret goes through HKDF-SHA256 with a context
  label (round, purpose, the two parties), so one agreement never keys two things.
- Share encryption between clients: AES-256-GCM (authenticated), fresh 96-bit nonce, the
  sender and recipient as associated data, so the server can neither read, alter nor
  redirect a share.
- Masks: AES-256-CTR keystream from the full 32-byte seed, read as little-endian uint32
  (a PRG: masks from seeds that agree on any prefix are unrelated).
- Fixed-point: a float update in ``[-B, B]`` becomes ``round(x * scale) mod 2^R`` in a ring
  of ``R`` bits (32 unless the run narrows it, 8 at least); with ``scale`` the largest
  power of two at or below ``(2^(R-1) - 1) / (n B)`` the sum of n clients never wraps, so the
  signed reading of the masked sum is exact. Resolution is ``1 / scale`` (about 5e-9 x n B
  at 32 bits, 2^(32-R) times coarser at R). Masks are drawn as uint32 and used mod 2^R:
  the low R bits of a uniform word are uniform.
"""

from __future__ import annotations

import math
import os

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

RING_BITS = 32  # the widest ring, and the default
MIN_RING_BITS = 8  # below this no cohort keeps a useful grid
KEY_BYTES = 32


class KeyPair:
    """An X25519 key pair; ``public`` is the raw 32 bytes that travel."""

    def __init__(self, private: X25519PrivateKey | None = None) -> None:
        self.private = private or X25519PrivateKey.generate()
        self.public = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def secret_bytes(self) -> bytes:
        """The private key's raw 32 bytes: what is secret-shared so survivors can unmask a dropout."""
        return self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @classmethod
    def from_secret(cls, raw: bytes) -> KeyPair:
        return cls(X25519PrivateKey.from_private_bytes(raw))


_PROBE = X25519PrivateKey.generate()  # a throwaway key to test others' keys with; it keys nothing


def usable_exchange_key(public: bytes) -> bool:
    """Whether an advertised X25519 key can be agreed with: a low-order point (all zeros, say)
    makes every peer's exchange fail, so one client could knock its neighbours out."""
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        return False
    return True


class SigningKey:
    """A per-round Ed25519 key; ``public`` is the raw 32 bytes that travel."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.public = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def verify(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def agree(private: X25519PrivateKey, peer_public: bytes, context: bytes) -> bytes:
    """A 32-byte key both parties derive: HKDF-SHA256 over the X25519 shared secret."""
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"shoal-secagg/" + context
    ).derive(shared)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Decrypt and authenticate; raises ``cryptography.exceptions.InvalidTag`` on tampering."""
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], aad)


def mask(seed: bytes, length: int) -> np.ndarray:
    """``length`` pseudorandom uint32 from a 32-byte seed (AES-256-CTR keystream)."""
    if len(seed) != KEY_BYTES:
        raise ValueError(f"mask seeds are {KEY_BYTES} bytes, got {len(seed)}")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(encryptor.update(bytes(4 * length)), dtype="<u4").copy()


def ring_mask(bits: int) -> np.uint32:
    """``2^bits - 1``: ``x & ring_mask(bits)`` is ``x mod 2^bits`` for uint32 ``x``."""
    return np.uint32((1 << bits) - 1)


def fixed_point_scale(num_clients: int, bound: float, bits: int = RING_BITS) -> float:
    """The largest power-of-two scale at which ``num_clients`` values in ``[-bound, bound]``,
    each rounded up or down to the grid, sum without leaving the signed ``bits``-bit range."""
    if num_clients < 1 or not bound > 0:
        raise ValueError("fixed point needs num_clients >= 1 and bound > 0")
    top = 2 ** (bits - 1) - 1
    limit = top / (num_clients * bound)
    if limit < 1:
        raise ValueError(f"{num_clients} clients with values up to {bound} overflow a {bits}-bit ring")
    scale = float(2 ** int(np.floor(np.log2(limit))))
    if num_clients * math.ceil(bound * scale) > top:  # a value at the bound may round up a step
        scale /= 2
    return scale


def encode(
    values: np.ndarray,
    bound: float,
    scale: float,
    bits: int = RING_BITS,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Floats clamped to ``[-bound, bound]`` as ring elements (uint32 below ``2^bits``, two's
    complement). With ``rng``, stochastic rounding: ``x`` goes to the grid point above with
    probability equal to how far it is past the one below, so ``E[decode] = x`` exactly;
    without, to the nearest grid point."""
    scaled = np.clip(values.astype(np.float64), -bound, bound) * scale
    if rng is None:
        grid = np.round(scaled)
    else:
        below = np.floor(scaled)
        grid = below + (rng.random(scaled.shape) < scaled - below)
    return grid.astype(np.int64).astype(np.uint32) & ring_mask(bits)


def signed(total: np.ndarray, bits: int = RING_BITS) -> np.ndarray:
    """A ring element read as a signed integer in ``[-2^(bits-1), 2^(bits-1))`` (int64)."""
    wide = total.astype(np.uint32).astype(np.int64)
    return np.where(wide >= 1 << (bits - 1), wide - (1 << bits), wide)


def decode(total: np.ndarray, scale: float, bits: int = RING_BITS) -> np.ndarray:
    """A ring sum read as signed integers, back to floats."""
    return (signed(total, bits).astype(np.float64) / scale).astype(np.float32)
