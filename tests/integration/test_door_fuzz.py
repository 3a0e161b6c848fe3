"""Fuzzing the door with hypothesis (schemathesis is not installed, and the door serves no
OpenAPI on purpose): random paths, headers and bodies, signed or not. No 5xx, ever; a refused
request writes nothing."""

from __future__ import annotations

import json
import string
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

from tests.integration.test_door import Door

HEADER_TEXT = st.text(alphabet=string.printable.strip() + " ", max_size=80)
JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.text(max_size=30),
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
ALMOST_VALID = st.fixed_dictionaries(
    {"type": st.sampled_from(["task.create"] * 3 + ["task.event", "task.delete", ""]),
     "title": st.one_of(st.text(min_size=1, max_size=600), st.integers())},
    optional={
        "body": st.text(max_size=50),
        "priority": st.sampled_from(["P0", "P1", "P2", "P3", "p0"]),
        "draft": st.one_of(st.booleans(), st.text(max_size=3)),
        "task_id": st.one_of(st.uuids().map(str), st.text(max_size=10)),
        "kind": st.text(max_size=12),
        "data": JSON_VALUE,
    },
)
BODY = st.one_of(
    ALMOST_VALID.map(lambda v: json.dumps(v).encode()),
    ALMOST_VALID.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
    st.binary(max_size=300),
    JSON_VALUE.map(lambda v: json.dumps(v).encode()),
    ALMOST_VALID.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=100).map(lambda s: s.encode("utf-16")),
)


@pytest.fixture(scope="module")
def fuzz_door(app_pool, owner_dsn):
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        tid = conn.execute("INSERT INTO tenants (slug, name) VALUES (%s, 'fuzz') RETURNING id",
                           [f"fuzz-{uuid.uuid4().hex[:8]}"]).fetchone()[0]

    class T:
        id = tid

    return Door(app_pool, owner_dsn, T)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(
    body=BODY,
    source_kind=st.sampled_from(["bound"] * 5 + ["unbound", "unknown", "random"]),
    random_source=st.from_regex(r"\A[A-Za-z0-9._~%-]{1,30}\Z"),
    sign=st.sampled_from([True, True, True, False]),
    msg_id=st.one_of(st.from_regex(r"\Amsg_[A-Za-z0-9]{1,20}\Z"), HEADER_TEXT),
    skew=st.one_of(st.just(0), st.integers(min_value=-1000, max_value=1000)),
    garbage=st.just({}) | st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature",
                         "content-length", "content-type"]),
        HEADER_TEXT, max_size=2),
)
def test_no_request_makes_the_door_fail(fuzz_door, body, source_kind, random_source, sign,
                                        msg_id, skew, garbage):
    door = fuzz_door
    source = {"bound": door.source, "unbound": door.unbound, "unknown": "nobody",
              "random": random_source}[source_kind]
    ts = int(time.time()) + skew
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts)}
    if sign:
        try:
            headers["webhook-signature"] = Webhook(door.current).sign(
                msg_id, datetime.fromtimestamp(ts, UTC), body.decode("utf-8"))
        except UnicodeDecodeError:
            headers["webhook-signature"] = "v1,AAAA"
    headers.update(garbage)
    before = door.rows()
    try:
        r = door.client.post(f"/callbacks/{source}", content=body, headers=headers)
    except Exception as exc:  # httpx refusing to send a header: not the door's concern
        if "header" in str(exc).lower():
            return
        raise
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400 or r.json().get("status") == "duplicate":
        assert door.rows() == before
