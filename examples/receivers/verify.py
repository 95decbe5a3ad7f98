"""Verify an otpd delivery in Python (quoted by the README; run by tests/receivers.rs).

pip install standardwebhooks
"""
import base64
import hashlib
import hmac

from standardwebhooks.webhooks import Webhook


def standard_webhooks_key(secret: str) -> str:
    """A registered webhook's `whsec_...` secret is used as is; a plain
    `callback_secret` (or delivery-report `webhook_secret`) keys the HMAC with its
    UTF-8 bytes, which the library takes as base64."""
    if secret.startswith("whsec_"):
        return secret
    return base64.b64encode(secret.encode("utf-8")).decode("ascii")


def verify(secret: str, headers: dict, body: bytes) -> dict:
    """Returns the parsed event, or raises if a signature does not verify.
    `headers` with lower-case names; `body` the raw bytes, before any JSON parsing.
    Rejects a `webhook-timestamp` more than 5 minutes from this clock (replays)."""
    event = Webhook(standard_webhooks_key(secret)).verify(body, headers)
    # Optional: otpd's own header, HMAC-SHA256 of the body keyed by the secret as is.
    expected = "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, headers.get("x-otpd-signature", "")):
        raise ValueError("X-Otpd-Signature does not match")
    return event


if __name__ == "__main__":
    # Test entry point: {"secret": ..., "headers": {...}, "body": "..."} on stdin.
    import json
    import sys

    delivery = json.load(sys.stdin)
    event = verify(delivery["secret"], delivery["headers"], delivery["body"].encode("utf-8"))
    print("valid", event["event"])
