"""A certificate authority and certificates for a test deployment (``shoal certs``).

Everything is made with ``cryptography``: an ECDSA P-256 CA, a server certificate for the
given host names and IPs, and one client certificate per device whose common name is the
client id (with mutual TLS the server takes a device's identity from it). For production
use your organisation's PKI; these files are for trials and tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal.net.auth import check_client_id

_DAYS = 365


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shoal"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only from the first byte: a file written and then
    chmod'ed is readable by everyone in between."""
    path.unlink(missing_ok=True)  # O_CREAT keeps an old file's mode; O_EXCL makes a new one
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    _write_private(
        path.with_suffix(".key"),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_DAYS))
    )


def make_certs(out: str | Path, hosts: list[str], clients: list[str]) -> Path:
    """Write ca.pem/ca.key, server.pem/server.key and <client>.pem/.key into ``out``."""
    for cid in clients:  # the id becomes a common name and a file name: refuse odd ones first
        check_client_id(cid)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("shoal test CA")
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(out / "ca", ca_key, ca)
    alt: list[x509.GeneralName] = []
    for h in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    server_key = _key()
    server = (
        _builder(_name(hosts[0]), ca_name, server_key.public_key())
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(out / "server", server_key, server)
    for cid in clients:
        key = _key()
        cert = (
            _builder(_name(cid), ca_name, key.public_key())
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(out / f"client-{cid}", key, cert)
    return out
