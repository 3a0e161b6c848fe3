"""End to end on the dispatch engine: a worker claims a task, the assigned agent answers it
through its own chain with retrieved passages, and the ledger and task events record it."""

import json
from decimal import Decimal

import pytest

from app.agents.config import WorkforceConfig, build_router
from app.agents.ledger import PostgresAccounting, seed_prices
from app.agents.retrieval import add_document
from app.agents.workforce import Workforce
from app.db import tenant_transaction
from app.dispatch.tasks import create_agent, create_task
from app.dispatch.worker import Worker
from devtools.fakes import start_fake_fleet

FILLER = " Changes go through review and the operator signs them off." * 8
RUNBOOK = ("The door service terminates TLS on port 443." + FILLER + "\n\n"
           "WireGuard keys rotate every ninety days; the rotation owner is Priya." + FILLER
           + "\n\nBackups ship nightly at 02:30 UTC." + FILLER)


@pytest.fixture(scope="module")
def fleet():
    servers = start_fake_fleet(api_key="sk-test-fake-0000000000000000000000")
    yield servers
    for server in servers.values():
        server.stop()


def config_for(fleet) -> WorkforceConfig:
    return WorkforceConfig.model_validate({
        "deployments": [
            {"name": "sonnet", "provider": "anthropic", "base_url": fleet["anthropic"].base_url,
             "model": "claude-sonnet-4-6", "context_window": 200000, "api_key_env": "ANT_KEY",
             "max_output_tokens": 64},
            {"name": "gpt", "provider": "openai", "base_url": fleet["openai"].base_url,
             "model": "gpt-4.1", "context_window": 1000000, "api_key_env": "OAI_KEY",
             "max_output_tokens": 64},
        ],
        "retry": {"max_attempts": 2, "base_delay": 0.01},
    })


ENV = {"ANT_KEY": "sk-test-fake-0000000000000000000000",
       "OAI_KEY": "sk-test-fake-0000000000000000000000"}


def test_a_worker_runs_a_task_through_the_agents_chain(fleet, app_pool, make_tenant):
    for server in fleet.values():
        server.reset()
    tenant = make_tenant("workforce")
    with tenant_transaction(app_pool, tenant.id) as conn:
        seed_prices(conn, tenant.id)
        add_document(conn, tenant.id, "Runbook", RUNBOOK)
        agent = create_agent(conn, tenant.id, name="sre", persona="You are Cy, the SRE.",
                             model_preferences={"chain": ["gpt", "sonnet"]}, budget_usd="1")
        task = create_task(conn, tenant.id, title="Who owns the WireGuard key rotation?",
                           body="Contact: ops@example.com", assignee_id=agent["id"],
                           status="Active")
    router = build_router(config_for(fleet), PostgresAccounting(app_pool), ENV)
    workforce = Workforce(app_pool, router, system_prompt="You are an Agent VOS agent.")
    worker = Worker(app_pool, worker_id="test/1", handler=workforce.handle)
    assert worker.run_once(tenant.id) is True

    # The agent's own chain was used: gpt first, never sonnet.
    assert len(fleet["openai"].received) == 1 and fleet["anthropic"].received == []
    sent = fleet["openai"].received[0].json()
    user_text = sent["messages"][1]["content"]
    assert "rotation owner is Priya" in user_text  # the retrieved passage
    assert "port 443" not in user_text  # ... and not the whole document
    assert "You are Cy, the SRE." in sent["messages"][0]["content"]
    assert "ops@example.com" not in json.dumps(sent)  # PII redacted on the way out

    with tenant_transaction(app_pool, tenant.id) as conn:
        status = conn.execute("SELECT status::text AS s FROM tasks WHERE id = %s",
                              [task["id"]]).fetchone()["s"]
        event = conn.execute(
            "SELECT payload FROM task_events WHERE task_id = %s AND kind = 'work.result'",
            [task["id"]]).fetchone()["payload"]
        (row,) = conn.execute("SELECT * FROM agent_calls").fetchall()
    assert status == "Review"
    assert event["deployment"] == "gpt" and event["model_served"] == "gpt-4.1"
    assert (row["task_id"], row["agent_id"], row["outcome"]) == (task["id"], agent["id"], "ok")
    assert Decimal(event["cost_usd"]) == row["cost_usd"] > 0


def test_an_exhausted_budget_parks_the_task_with_the_agent_and_amount(fleet, app_pool,
                                                                       make_tenant):
    """A budget denial is not a failed attempt: the task is parked (agent, amount, reason)
    and not claimable again until the budget changes (tests/integration/
    test_worker_failsafe.py covers the unparking)."""
    for server in fleet.values():
        server.reset()
    tenant = make_tenant("poor")
    with tenant_transaction(app_pool, tenant.id) as conn:
        seed_prices(conn, tenant.id)
        agent = create_agent(conn, tenant.id, name="broke", budget_usd="0")
        task = create_task(conn, tenant.id, title="Anything", assignee_id=agent["id"],
                           status="Active")
    router = build_router(config_for(fleet), PostgresAccounting(app_pool), ENV)
    worker = Worker(app_pool, worker_id="test/2",
                    handler=Workforce(app_pool, router, system_prompt="S").handle)
    assert worker.run_once(tenant.id) is True
    assert worker.run_once(tenant.id) is False, "a parked task is not claimable"
    with tenant_transaction(app_pool, tenant.id) as conn:
        event = conn.execute(
            "SELECT payload FROM task_events WHERE task_id = %s AND kind = 'work.parked'",
            [task["id"]]).fetchone()["payload"]
        row = conn.execute("SELECT * FROM tasks WHERE id = %s", [task["id"]]).fetchone()
    assert "BudgetExceeded" in event["reason"] and "agents.budget_usd" in event["reason"]
    assert event["agent_id"] == str(agent["id"]) and Decimal(event["amount_usd"]) > 0
    assert (row["status"], row["attempts"], row["parked_agent_id"]) == ("Active", 0,
                                                                         agent["id"])
    assert fleet["openai"].received == [] and fleet["anthropic"].received == []


def test_config_errors_name_what_to_fix(fleet):
    with pytest.raises(ValueError, match="set the environment variable OAI_KEY"):
        build_router(config_for(fleet), None, {"ANT_KEY": "x"})
    with pytest.raises(ValueError, match="not deployments"):
        WorkforceConfig.model_validate({"deployments": [
            {"name": "a", "provider": "ollama", "base_url": "http://127.0.0.1:1",
             "model": "m", "context_window": 10}], "default_chain": ["b"]})
