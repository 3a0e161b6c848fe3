"""Fuzzing the private API's write routes with hypothesis: any JSON, never a 5xx."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.dispatch.api import create_api_app

TEXT = st.text(max_size=40)  # includes NUL and other characters Postgres refuses
VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(),
              st.floats(allow_nan=False, allow_infinity=False), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)
TASK = st.fixed_dictionaries({"title": TEXT}, optional={
    "body": TEXT, "priority": st.sampled_from(["P0", "P1", "P2", "P9"]),
    "status": st.sampled_from(["Draft", "Active", "Review", "Nope"]),
    "assignee_id": st.one_of(st.uuids().map(str), TEXT)})
AGENT = st.fixed_dictionaries({"name": TEXT}, optional={
    "role": TEXT, "persona": TEXT, "manager_id": st.uuids().map(str), "model_preferences": VALUE,
    "budget_usd": st.one_of(st.decimals(allow_nan=False, allow_infinity=False).map(str), TEXT,
                            st.integers())})


@pytest.fixture(scope="module")
def api_and_tenant(app_pool, owner_dsn):
    import psycopg

    from app.ui.auth import create_operator

    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        tenant = conn.execute("INSERT INTO tenants (slug, name) VALUES (%s, 'f') RETURNING id",
                              [f"apifuzz-{uuid.uuid4().hex[:8]}"]).fetchone()[0]
        token = create_operator(conn, tenant, "fuzz")
    return TestClient(create_api_app(app_pool), base_url="http://127.0.0.1",
                      raise_server_exceptions=False), token


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(route="/tasks", task={"title": "a\x00b"}, agent={}, junk=None)
@example(route="/agents", task={}, agent={"name": "a", "model_preferences": {"k": "\x00"}},
         junk=None)
@given(route=st.sampled_from(["/tasks", "/agents"]), task=TASK, agent=AGENT,
       junk=st.one_of(st.none(), VALUE))
def test_api_writes_never_fail_with_5xx(api_and_tenant, route, task, agent, junk):
    client, token = api_and_tenant
    payload = junk if junk is not None else (task if route == "/tasks" else agent)
    r = client.post(route, json=payload, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code < 500, (payload, r.status_code, r.text)
