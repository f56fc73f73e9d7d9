"""Identity, tokens and ids: what enters the server is checked where it enters."""

from __future__ import annotations

import os
import stat

import grpc
import pytest

from shoal.errors import ConfigError
from shoal.net.auth import (
    Authenticator,
    PeerLimiter,
    Refused,
    check_client_id,
    read_token,
    read_tokens,
    token_digest,
)
from shoal.net.certs import make_certs


@pytest.mark.parametrize("good", ["0", "device-17", "a.b_c-D", "x" * 128])
def test_ids_from_the_allowed_alphabet_pass(good):
    assert check_client_id(good) == good


@pytest.mark.parametrize("bad", ["", "x" * 129, "a\nb", "a b", "a/b", "é", "a\x1b[31m", None, 7])
def test_other_ids_are_refused_with_the_rule(bad):
    with pytest.raises(ConfigError, match="A-Z a-z 0-9"):
        check_client_id(bad)


def test_token_files_name_valid_ids_and_sha256_digests(tmp_path):
    digest = token_digest("s3cret")
    good = tmp_path / "tokens"
    good.write_text(f"# enrolled devices\n0 {digest}\n\ndevice-1 {digest.upper()}\n")
    assert read_tokens(good) == {"0": digest, "device-1": digest}
    for line, why in ((f"a\x1bb {digest}", "not a valid client id"), ("0 abc", "64 hex digits")):
        bad = tmp_path / "bad"
        bad.write_text(line + "\n")
        with pytest.raises(ConfigError, match=why):
            read_tokens(bad)


def test_a_device_token_comes_from_a_file_or_the_environment_never_a_flag(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    assert read_token(path, {}) == "s3cret"
    assert read_token(None, {"SHOAL_TOKEN": "env"}) == "env"
    assert read_token(None, {}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_token(tmp_path / "empty", {})


def test_identity_comes_from_the_certificate_or_the_metadata_and_tokens_are_checked():
    auth = Authenticator(tokens={"0": token_digest("s3cret")}, enrolled=frozenset({"0", "1"}))
    assert auth.identify([("shoal-client-id", "0"), ("shoal-token", "s3cret")], None) == "0"
    assert auth.identify([("shoal-token", "s3cret")], [b"0"]) == "0"  # the certificate names it
    cases = [
        ([("shoal-client-id", "1"), ("shoal-token", "s3cret")], [b"0"], grpc.StatusCode.PERMISSION_DENIED),
        ([("shoal-token", "s3cret")], None, grpc.StatusCode.UNAUTHENTICATED),  # no id at all
        ([("shoal-client-id", "0"), ("shoal-token", "guess")], None, grpc.StatusCode.UNAUTHENTICATED),
        ([("shoal-client-id", "0\nINFO forged")], None, grpc.StatusCode.UNAUTHENTICATED),
    ]
    for metadata, names, code in cases:
        with pytest.raises(Refused) as err:
            auth.identify(metadata, names)
        assert err.value.code is code
    open_run = Authenticator(enrolled=frozenset({"0"}))
    with pytest.raises(Refused) as err:
        open_run.identify([("shoal-client-id", "2")], None)
    assert err.value.code is grpc.StatusCode.PERMISSION_DENIED and "not enrolled" in err.value.reason


def test_a_peer_gets_its_slots_and_no_more():
    limiter = PeerLimiter(per_peer=2)
    with limiter.slot("0"), limiter.slot("0"), limiter.slot("1"):
        with pytest.raises(Refused) as err, limiter.slot("0"):
            pass
        assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert limiter.in_flight("0") == 0


def test_keys_are_private_from_the_moment_they_exist(tmp_path, monkeypatch):
    # With a permissive umask and no chmod afterwards, a key written and then chmod'ed would
    # be world-readable: the mode must be set when the file is created.
    old = os.umask(0)
    monkeypatch.setattr("pathlib.Path.chmod", lambda self, mode: None)
    try:
        out = make_certs(tmp_path / "certs", ["127.0.0.1"], ["0"])
    finally:
        os.umask(old)
    for key in ("ca.key", "server.key", "client-0.key"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600, key
    with pytest.raises(ConfigError, match="not a valid client id"):
        make_certs(tmp_path / "more", ["127.0.0.1"], ["a\nb"])


def test_what_a_peer_sent_cannot_forge_log_lines():
    from shoal.net.auth import printable

    assert printable("array x\nINFO shoal.server: round 9 committed\x1b[0m") == (
        "array x\\nINFO shoal.server: round 9 committed\\x1b[0m"
    )
