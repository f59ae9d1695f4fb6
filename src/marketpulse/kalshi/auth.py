"""Kalshi request signing: RSA-PSS with SHA-256 over ``timestamp_ms + METHOD + path``.

The same signature authenticates REST requests and the WebSocket handshake (docs/protocols/kalshi.md §1.2):

- message: ``str(timestamp_ms) + METHOD + path`` where ``path`` starts at the API root
  (``/trade-api/v2/...`` or ``/trade-api/ws/v2``) and excludes the query string;
- RSA-PSS, SHA-256, MGF1(SHA-256), salt length = digest length (32 bytes);
- base64 (standard alphabet) in ``KALSHI-ACCESS-SIGNATURE``, with ``KALSHI-ACCESS-KEY`` and
  ``KALSHI-ACCESS-TIMESTAMP`` alongside.

The private key lives only inside :class:`KalshiCredentials`; it never appears in a repr, a log
line or an exception message. :func:`verify_signature` and :func:`verify_headers` are the
server-side half, used by the simulator.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "HEADER_KEY",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "WS_PATH",
    "KalshiAuthError",
    "KalshiCredentials",
    "generate_private_key_pem",
    "handshake_logger",
    "load_public_key",
    "signing_message",
    "verify_headers",
    "verify_signature",
]

HEADER_KEY = "KALSHI-ACCESS-KEY"
HEADER_TIMESTAMP = "KALSHI-ACCESS-TIMESTAMP"
HEADER_SIGNATURE = "KALSHI-ACCESS-SIGNATURE"
WS_PATH = "/trade-api/ws/v2"

ENV_KEY_ID = "KALSHI_API_KEY_ID"
ENV_KEY_PATH = "KALSHI_PRIVATE_KEY_PATH"
ENV_KEY_PEM = "KALSHI_PRIVATE_KEY"

_SECRET_HEADERS = frozenset({HEADER_KEY.lower(), HEADER_SIGNATURE.lower(), "authorization"})


class _RedactSignedHeaders(logging.Filter):
    """Hides the values of the signing headers in ``websockets``' handshake log lines.

    At DEBUG, ``websockets`` logs each handshake header as ``"> %s: %s"`` (client) or
    ``"< %s: %s"`` (server), the signature and key id among them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            isinstance(args, tuple)
            and len(args) == 2
            and isinstance(args[0], str)
            and args[0].lower() in _SECRET_HEADERS
        ):
            record.args = (args[0], "[redacted]")
        return True


def handshake_logger(name: str) -> logging.Logger:
    """A logger for a ``websockets`` connection that carries the signing headers: its DEBUG
    handshake lines show every header but those (pass it as the connection's ``logger``)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _RedactSignedHeaders) for f in logger.filters):
        logger.addFilter(_RedactSignedHeaders())
    return logger


_PSS_SALT_LENGTH = 32  # = SHA-256 digest length, what Kalshi's starter code and SDKs use


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=_PSS_SALT_LENGTH)


class KalshiAuthError(Exception):
    """Credentials are missing or unusable. The message never contains key material."""


def signing_message(timestamp_ms: int | str, method: str, path: str) -> bytes:
    """Build the exact bytes Kalshi signs.

    Args:
        timestamp_ms: Unix time in milliseconds (as sent in ``KALSHI-ACCESS-TIMESTAMP``).
        method: HTTP method; upper-cased here.
        path: Request path, or a full URL; the scheme, host and query string are dropped
            because Kalshi signs only the path.

    Returns:
        The UTF-8 message ``timestamp + METHOD + path``.
    """
    if "://" in path:
        path = urlsplit(path).path
    path = path.split("?", 1)[0]
    return f"{timestamp_ms}{method.upper()}{path}".encode()


def _load_private_key(pem: bytes, source: str) -> rsa.RSAPrivateKey:
    try:
        # load_pem_private_key accepts PKCS#1 ("RSA PRIVATE KEY") and PKCS#8 ("PRIVATE KEY").
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # Deliberately drop the cause: nothing derived from the key text may travel further.
        raise KalshiAuthError(
            f"could not load the Kalshi private key from {source}: "
            f"expected an unencrypted PEM RSA private key ({type(exc).__name__})"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KalshiAuthError(f"the Kalshi private key from {source} is not an RSA key")
    return key


class KalshiCredentials:
    """An API key id and its RSA private key; signs requests.

    Build with :meth:`from_pem`, :meth:`from_file` or :meth:`from_env`. The object is safe to
    print or log: its repr shows the key id only.
    """

    __slots__ = ("_key", "key_id")

    def __init__(self, key_id: str, private_key: rsa.RSAPrivateKey) -> None:
        """Wrap an already loaded key.

        Args:
            key_id: Kalshi API key id (``KALSHI-ACCESS-KEY``).
            private_key: The RSA private key matching the registered public key.
        """
        if not key_id:
            raise KalshiAuthError("the Kalshi API key id is empty")
        self.key_id = key_id
        self._key = private_key

    @classmethod
    def from_pem(cls, key_id: str, pem: str | bytes) -> KalshiCredentials:
        """Load from PEM text (PKCS#1 or PKCS#8, unencrypted)."""
        data = pem.encode() if isinstance(pem, str) else pem
        if b"\n" not in data.strip() and b"\\n" in data:
            # Keys pasted into an environment variable often carry literal "\n" sequences.
            data = data.replace(b"\\n", b"\n")
        return cls(key_id, _load_private_key(data, "PEM text"))

    @classmethod
    def from_file(cls, key_id: str, path: str | os.PathLike[str]) -> KalshiCredentials:
        """Load the private key from a PEM file."""
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise KalshiAuthError(
                f"cannot read the Kalshi private key file {p}: {exc.strerror or exc}"
            ) from None
        return cls(key_id, _load_private_key(data, f"file {p}"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KalshiCredentials:
        """Load from ``KALSHI_API_KEY_ID`` plus ``KALSHI_PRIVATE_KEY_PATH`` or ``KALSHI_PRIVATE_KEY``.

        Args:
            environ: Mapping to read instead of ``os.environ`` (tests).

        Raises:
            KalshiAuthError: A variable is missing or the key cannot be loaded.
        """
        env = os.environ if environ is None else environ
        key_id = env.get(ENV_KEY_ID, "").strip()
        if not key_id:
            raise KalshiAuthError(f"{ENV_KEY_ID} is not set")
        path = env.get(ENV_KEY_PATH, "").strip()
        if path:
            return cls.from_file(key_id, path)
        pem = env.get(ENV_KEY_PEM, "")
        if pem.strip():
            return cls.from_pem(key_id, pem)
        raise KalshiAuthError(f"neither {ENV_KEY_PATH} nor {ENV_KEY_PEM} is set")

    def sign(self, message: bytes) -> str:
        """Sign raw bytes; returns the base64 signature."""
        sig = self._key.sign(message, _pss(), hashes.SHA256())
        return base64.b64encode(sig).decode("ascii")

    def headers(self, method: str, path: str, timestamp_ms: int | None = None) -> dict[str, str]:
        """The three ``KALSHI-ACCESS-*`` headers for one request or handshake.

        Args:
            method: HTTP method (``GET`` for the WebSocket handshake).
            path: Request path or URL; the query string is not signed.
            timestamp_ms: Override the current time (tests).
        """
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        return {
            HEADER_KEY: self.key_id,
            HEADER_TIMESTAMP: str(ts),
            HEADER_SIGNATURE: self.sign(signing_message(ts, method, path)),
        }

    def public_key_pem(self) -> bytes:
        """The matching public key as PEM (SubjectPublicKeyInfo)."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __repr__(self) -> str:
        return f"KalshiCredentials(key_id={self.key_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would carry the key into workflow payloads or caches; refuse.
        raise TypeError("KalshiCredentials cannot be pickled")


def generate_private_key_pem(bits: int = 2048) -> bytes:
    """Generate a fresh RSA private key as PKCS#8 PEM (for the simulator and tests)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """Load an RSA public key from PEM; a private key PEM yields its public half."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        if b"PRIVATE KEY" in data:
            key: object = serialization.load_pem_private_key(data, password=None).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KalshiAuthError(f"not a PEM RSA key ({type(exc).__name__})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KalshiAuthError("not an RSA key")
    return key


def verify_signature(
    public_key: rsa.RSAPublicKey,
    signature_b64: str,
    timestamp_ms: int | str,
    method: str,
    path: str,
) -> bool:
    """Check one Kalshi signature exactly as the exchange does (salt length 32).

    Returns:
        True when the signature matches; False for any mismatch or malformed input.
    """
    try:
        sig = base64.b64decode(signature_b64, validate=True)
    except (ValueError, TypeError):
        return False
    try:
        public_key.verify(sig, signing_message(timestamp_ms, method, path), _pss(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def verify_headers(
    public_key: rsa.RSAPublicKey,
    headers: Mapping[str, str],
    method: str,
    path: str,
    *,
    key_id: str | None = None,
    max_skew_ms: int | None = None,
    now_ms: int | None = None,
) -> bool:
    """Check the ``KALSHI-ACCESS-*`` headers of a request (case-insensitive names).

    Args:
        public_key: The registered public key.
        headers: Request headers.
        method: HTTP method of the request.
        path: Request path (query string ignored).
        key_id: When given, ``KALSHI-ACCESS-KEY`` must equal it.
        max_skew_ms: When given, reject timestamps further than this from ``now_ms``.
            Kalshi's own window is unconfirmed (docs/protocols/kalshi.md §1.2), so the default is no check.
        now_ms: Current time override (tests).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    got_key = lower.get(HEADER_KEY.lower())
    ts = lower.get(HEADER_TIMESTAMP.lower())
    sig = lower.get(HEADER_SIGNATURE.lower())
    if not got_key or not ts or not sig or not ts.isdigit():
        return False
    if key_id is not None and got_key != key_id:
        return False
    if max_skew_ms is not None:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if abs(now - int(ts)) > max_skew_ms:
            return False
    return verify_signature(public_key, sig, ts, method, path)
