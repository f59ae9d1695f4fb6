"""Signing: verify with the public key, salt length, query string excluded, no key leaks."""

from __future__ import annotations

import base64
import logging
import pickle
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from marketpulse.kalshi import (
    KalshiAuthError,
    KalshiCredentials,
    generate_private_key_pem,
    load_public_key,
    signing_message,
    verify_headers,
    verify_signature,
)
from marketpulse.kalshi.auth import HEADER_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP


@pytest.fixture(scope="module")
def pem() -> bytes:
    return generate_private_key_pem()


@pytest.fixture(scope="module")
def creds(pem: bytes) -> KalshiCredentials:
    return KalshiCredentials.from_pem("key-123", pem)


def _pem_body(pem: bytes) -> str:
    # The base64 body lines of the PEM: any of them appearing somewhere is a leak.
    return "".join(line for line in pem.decode().splitlines() if "-----" not in line)


def test_signing_message_drops_query_host_and_uppercases_method() -> None:
    assert signing_message(1703123456789, "get", "/trade-api/v2/portfolio/orders?limit=5") == (
        b"1703123456789GET/trade-api/v2/portfolio/orders"
    )
    assert signing_message("17", "GET", "https://h.example/trade-api/ws/v2?x=1") == (
        b"17GET/trade-api/ws/v2"
    )


def test_signature_verifies_with_public_key_and_salt_is_digest_length(
    creds: KalshiCredentials, pem: bytes
) -> None:
    h = creds.headers("GET", "/trade-api/v2/markets?limit=5&cursor=abc", timestamp_ms=1700000000000)
    assert h[HEADER_KEY] == "key-123"
    assert h[HEADER_TIMESTAMP] == "1700000000000"
    sig = base64.b64decode(h[HEADER_SIGNATURE])
    pub = load_public_key(creds.public_key_pem())
    assert isinstance(pub, rsa.RSAPublicKey)
    msg = b"1700000000000GET/trade-api/v2/markets"
    # Verify independently with cryptography, pinning salt length 32 = SHA-256 digest size.
    pub.verify(
        sig, msg, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
    )
    # A different salt length must not verify: the parameter really is 32, not MAX_LENGTH.
    with pytest.raises(InvalidSignature):
        pub.verify(
            sig,
            msg,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=64),
            hashes.SHA256(),
        )
    # The query string is excluded: the signature covers the bare path only.
    assert verify_signature(pub, h[HEADER_SIGNATURE], 1700000000000, "GET", "/trade-api/v2/markets")
    assert verify_signature(
        pub, h[HEADER_SIGNATURE], 1700000000000, "GET", "/trade-api/v2/markets?other=1"
    )
    assert not verify_signature(
        pub, h[HEADER_SIGNATURE], 1700000000001, "GET", "/trade-api/v2/markets"
    )
    assert not verify_signature(
        pub, h[HEADER_SIGNATURE], 1700000000000, "POST", "/trade-api/v2/markets"
    )
    assert not verify_signature(pub, "not base64!!", 1700000000000, "GET", "/trade-api/v2/markets")


def test_signatures_are_randomised_but_all_verify(creds: KalshiCredentials) -> None:
    pub = load_public_key(creds.public_key_pem())
    a = creds.headers("GET", "/trade-api/ws/v2", timestamp_ms=5)
    b = creds.headers("GET", "/trade-api/ws/v2", timestamp_ms=5)
    assert a[HEADER_SIGNATURE] != b[HEADER_SIGNATURE]  # PSS salt is random
    assert verify_headers(pub, a, "GET", "/trade-api/ws/v2")
    assert verify_headers(pub, b, "GET", "/trade-api/ws/v2")


def test_verify_headers_checks_key_id_skew_and_case_insensitive(creds: KalshiCredentials) -> None:
    pub = load_public_key(creds.public_key_pem())
    h = creds.headers("GET", "/trade-api/ws/v2", timestamp_ms=1_000_000)
    lower = {k.lower(): v for k, v in h.items()}
    assert verify_headers(pub, lower, "GET", "/trade-api/ws/v2", key_id="key-123")
    assert not verify_headers(pub, h, "GET", "/trade-api/ws/v2", key_id="other")
    assert verify_headers(pub, h, "GET", "/trade-api/ws/v2", max_skew_ms=5000, now_ms=1_004_000)
    assert not verify_headers(pub, h, "GET", "/trade-api/ws/v2", max_skew_ms=5000, now_ms=1_006_000)
    assert not verify_headers(pub, {}, "GET", "/trade-api/ws/v2")
    other = KalshiCredentials.from_pem("key-123", generate_private_key_pem())
    wrong = other.headers("GET", "/trade-api/ws/v2", timestamp_ms=1_000_000)
    assert not verify_headers(pub, wrong, "GET", "/trade-api/ws/v2")


def test_pkcs1_and_pkcs8_both_load(tmp_path: Path, pem: bytes) -> None:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert b"BEGIN RSA PRIVATE KEY" in pkcs1 and b"BEGIN PRIVATE KEY" in pem
    p1 = tmp_path / "k1.key"
    p1.write_bytes(pkcs1)
    c1 = KalshiCredentials.from_file("k", p1)
    c8 = KalshiCredentials.from_pem("k", pem.decode())
    assert c1.public_key_pem() == c8.public_key_pem()
    pub = load_public_key(pem)  # a private PEM yields its public half
    assert verify_headers(pub, c1.headers("GET", "/x", timestamp_ms=1), "GET", "/x")


def test_from_env_path_inline_and_escaped_newlines(tmp_path: Path, pem: bytes) -> None:
    p = tmp_path / "k.pem"
    p.write_bytes(pem)
    c = KalshiCredentials.from_env({"KALSHI_API_KEY_ID": "a", "KALSHI_PRIVATE_KEY_PATH": str(p)})
    assert c.key_id == "a"
    inline = KalshiCredentials.from_env(
        {"KALSHI_API_KEY_ID": "b", "KALSHI_PRIVATE_KEY": pem.decode()}
    )
    escaped = pem.decode().replace("\n", "\\n")
    c3 = KalshiCredentials.from_env({"KALSHI_API_KEY_ID": "c", "KALSHI_PRIVATE_KEY": escaped})
    assert inline.public_key_pem() == c.public_key_pem() == c3.public_key_pem()
    with pytest.raises(KalshiAuthError, match="KALSHI_API_KEY_ID"):
        KalshiCredentials.from_env({})
    with pytest.raises(KalshiAuthError, match="KALSHI_PRIVATE_KEY"):
        KalshiCredentials.from_env({"KALSHI_API_KEY_ID": "x"})


def test_key_never_in_repr_str_log_or_errors(
    creds: KalshiCredentials, pem: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = _pem_body(pem)
    first_line = pem.decode().splitlines()[1]
    assert "key-123" in repr(creds)
    for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}"):
        assert first_line not in text and "PRIVATE" not in text
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("creds %s %r", creds, creds)
    assert first_line not in caplog.text
    with pytest.raises(TypeError):
        pickle.dumps(creds)
    # A corrupted key: the error names the source but holds no key text at all.
    broken = pem.decode().replace(first_line, first_line[::-1])
    with pytest.raises(KalshiAuthError) as ei:
        KalshiCredentials.from_env({"KALSHI_API_KEY_ID": "x", "KALSHI_PRIVATE_KEY": broken})
    err = ei.value
    assert first_line[::-1] not in str(err) and first_line not in str(err)
    assert err.__cause__ is None and err.__suppress_context__
    for chunk in (body[i : i + 16] for i in range(0, len(body), 97)):
        assert chunk not in str(err) and chunk not in repr(err)
    bad = tmp_path / "bad.key"
    bad.write_text(broken)
    with pytest.raises(KalshiAuthError, match=r"bad\.key") as ei2:
        KalshiCredentials.from_file("x", bad)
    assert first_line[::-1] not in str(ei2.value)
    with pytest.raises(KalshiAuthError, match="cannot read"):
        KalshiCredentials.from_file("x", tmp_path / "missing.key")
