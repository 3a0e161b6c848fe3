"""Our Standard Webhooks verifier against the spec's test vector and the reference library."""

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from app.door.signature import SignatureError, decode_whsec, sign, verify

# The test vector published with the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

KEY = decode_whsec(SPEC_SECRET)


def test_signer_matches_the_spec_test_vector():
    assert sign(KEY, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE


def test_verifier_accepts_the_spec_test_vector_at_its_time():
    assert verify([KEY], SPEC_ID, str(SPEC_TS), SPEC_SIGNATURE, SPEC_BODY, now=SPEC_TS) == SPEC_TS


@settings(max_examples=60, deadline=None)
@given(
    msg_id=st.from_regex(r"\Amsg_[A-Za-z0-9]{1,40}\Z"),
    # the reference verifier parses the body as JSON, so generate JSON objects
    body=st.dictionaries(st.text(max_size=10), st.text(max_size=40), max_size=5).map(json.dumps),
    key=st.binary(min_size=16, max_size=64),
)
def test_our_signatures_match_the_reference_library_both_ways(msg_id, body, key):
    secret = "whsec_" + base64.b64encode(key).decode()
    reference = Webhook(secret)
    now = int(time.time())
    theirs = reference.sign(msg_id, datetime.fromtimestamp(now, UTC), body)
    ours = sign(key, msg_id, now, body.encode())
    assert ours == theirs
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(now), "webhook-signature": ours}
    reference.verify(body, headers)  # raises if the reference library disagrees
    assert verify([key], msg_id, str(now), theirs, body.encode(), now=now) == now


def test_reference_library_rejects_what_we_reject_for_a_tampered_body():
    now = int(time.time())
    sig = sign(KEY, SPEC_ID, now, SPEC_BODY)
    headers = {"webhook-id": SPEC_ID, "webhook-timestamp": str(now), "webhook-signature": sig}
    with pytest.raises(WebhookVerificationError):
        Webhook(SPEC_SECRET).verify(SPEC_BODY + b" ", headers)
    with pytest.raises(SignatureError) as err:
        verify([KEY], SPEC_ID, str(now), sig, SPEC_BODY + b" ", now=now)
    assert err.value.reason == "bad_signature"


@pytest.mark.parametrize(
    ("age", "reason"),
    [(301, "timestamp_too_old"), (-301, "timestamp_in_future")],
)
def test_timestamps_outside_five_minutes_are_refused(age, reason):
    now = 1_700_000_000
    sent = now - age
    sig = sign(KEY, "msg_1", sent, b"{}")
    with pytest.raises(SignatureError) as err:
        verify([KEY], "msg_1", str(sent), sig, b"{}", now=now, tolerance=300)
    assert err.value.reason == reason


def test_timestamps_at_the_edge_of_the_window_are_accepted():
    now = 1_700_000_000
    for sent in (now - 300, now + 300):
        sig = sign(KEY, "msg_1", sent, b"{}")
        assert verify([KEY], "msg_1", str(sent), sig, b"{}", now=now) == sent


def test_any_of_several_signatures_and_any_of_several_keys_verifies():
    old, new = b"o" * 32, b"n" * 32
    now = 1_700_000_000
    header = f"v1,{base64.b64encode(b'x' * 32).decode()} {sign(old, 'm', now, b'{}')}"
    assert verify([new, old], "m", str(now), header, b"{}", now=now) == now
    with pytest.raises(SignatureError):
        verify([new], "m", str(now), header, b"{}", now=now)


@pytest.mark.parametrize(
    ("webhook_id", "timestamp", "signature", "reason"),
    [
        (None, "1700000000", "v1,x", "missing_headers"),
        ("m", None, "v1,x", "missing_headers"),
        ("m", "1700000000", None, "missing_headers"),
        ("m m", "1700000000", "v1,x", "bad_webhook_id"),
        ("m", "17e8", "v1,x", "bad_timestamp"),
        ("m", "1700000000", "v1,not-base64!", "bad_signature"),
        ("m", "1700000000", "v2," + "A" * 44, "bad_signature"),
        ("m", "1700000000", " ".join(["v1,AAAA"] * 9), "too_many_signatures"),
    ],
)
def test_malformed_headers_get_a_clear_reason(webhook_id, timestamp, signature, reason):
    with pytest.raises(SignatureError) as err:
        verify([KEY], webhook_id, timestamp, signature, b"{}", now=1_700_000_000)
    assert err.value.reason == reason
