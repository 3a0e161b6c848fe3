"""Standard Webhooks signatures (https://www.standardwebhooks.com/), our own small verifier.

Signed content is `webhook-id.webhook-timestamp.body`; the signature is base64(HMAC-SHA256)
with the key inside a `whsec_…` secret; `webhook-signature` holds one or more space-separated
`v1,<base64>` entries (several during key rotation). We accept when any entry matches any of
the source's keys, and when the timestamp is within ±tolerance of our clock.
Checked against the `standardwebhooks` package and the spec's published test vector in
tests/unit/test_door_signature.py.

Example:
    >>> key = decode_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    >>> sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from app.settings import decode_whsec

__all__ = ["SignatureError", "decode_whsec", "sign", "verify"]

MAX_SIGNATURES = 8  # a header with more entries is refused: bounds the work per request
_WEBHOOK_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,256}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


class SignatureError(ValueError):
    """Why a request failed verification: `reason` is a short stable code for logs."""

    def __init__(self, reason: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


def _mac(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` entry for a message (used by tests and the benchmark)."""
    return "v1," + base64.b64encode(_mac(key, webhook_id, str(timestamp), body)).decode()


def _signatures(header: str) -> list[bytes]:
    entries = header.split()
    if len(entries) > MAX_SIGNATURES:
        raise SignatureError("too_many_signatures", "too many webhook-signature entries", 400)
    found = []
    for entry in entries:
        version, _, value = entry.partition(",")
        if version != "v1":
            continue  # unknown schemes (e.g. v1a) are skipped, as the spec asks
        try:
            found.append(base64.b64decode(value, validate=True))
        except ValueError:
            continue
    return found


def verify(
    keys: list[bytes],
    webhook_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    now: float,
    tolerance: int = 300,
) -> int:
    """Return the message timestamp if the request is authentic, else raise SignatureError.

    Example:
        verify([key], "msg_1", "1700000000", "v1,…", b"{}", now=time.time())
    """
    if not (webhook_id and timestamp and signature):
        raise SignatureError(
            "missing_headers", "webhook-id, webhook-timestamp and webhook-signature are required",
            400,
        )
    if not _WEBHOOK_ID.match(webhook_id):
        raise SignatureError("bad_webhook_id", "webhook-id has an unexpected form", 400)
    if not _TIMESTAMP.match(timestamp):
        raise SignatureError("bad_timestamp", "webhook-timestamp must be Unix seconds", 400)
    sent = int(timestamp)
    if now - sent > tolerance:
        raise SignatureError("timestamp_too_old", "webhook-timestamp is too old")
    if sent - now > tolerance:
        raise SignatureError("timestamp_in_future", "webhook-timestamp is in the future")
    candidates = _signatures(signature)
    for key in keys:
        expected = _mac(key, webhook_id, timestamp, body)
        # compare against every candidate without stopping early on a match per key
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return sent
    raise SignatureError("bad_signature", "no webhook-signature matches this source's secrets")
