"""TLS files for both ends: the server's (with a CA for client certificates) and a device's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from shoal.errors import ConfigError


def _read(path: Path) -> bytes:
    if not Path(path).is_file():
        raise ConfigError(f"TLS file {path} does not exist; make a test set with: shoal certs DIR")
    return Path(path).read_bytes()


@dataclass(frozen=True)
class TLSFiles:
    """The server's PEM files. With ``ca`` set the server requires client certificates
    from that CA and takes a device's id from its certificate's common name."""

    cert: Path
    key: Path
    ca: Path | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        pair = [(_read(self.key), _read(self.cert))]
        if self.ca is None:
            return grpc.ssl_server_credentials(pair)
        return grpc.ssl_server_credentials(pair, _read(self.ca), require_client_auth=True)


@dataclass(frozen=True)
class ClientTLS:
    """A device's PEM files: the CA that signed the server's certificate, and for mutual
    TLS the device's own certificate and key."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            _read(self.ca),
            _read(self.key) if self.key else None,
            _read(self.cert) if self.cert else None,
        )
