"""`vos agents seed-prices` and `vos agents work --drain` against a real Postgres and the fakes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.agents.prices import DEFAULT_PRICES
from app.db import tenant_transaction
from app.dispatch.tasks import create_agent, create_task
from cli import cli
from devtools.fakes import start_fake_fleet

runner = CliRunner()


def test_work_drains_the_queue_through_the_agents(app_pool, app_dsn, make_tenant, tmp_path):
    fleet = start_fake_fleet(api_key="sk-test-cli-000000000000000000000")
    try:
        tenant = make_tenant("cli")
        with tenant_transaction(app_pool, tenant.id) as conn:
            agent = create_agent(conn, tenant.id, name="ops", persona="You are Ops.",
                                 budget_usd="1")
            for title in ("Check port 443", "Check the backups"):
                create_task(conn, tenant.id, title=title, assignee_id=agent["id"],
                            status="Active")
        config = tmp_path / "agents.json"
        config.write_text(json.dumps({"deployments": [
            {"name": "gpt", "provider": "openai", "base_url": fleet["openai"].base_url,
             "model": "gpt-4.1", "context_window": 1000000, "api_key_env": "TEST_OAI_KEY",
             "max_output_tokens": 32}]}))
        env = {"DATABASE_URL": app_dsn, "TEST_OAI_KEY": "sk-test-cli-000000000000000000000"}

        seeded = runner.invoke(cli, ["agents", "seed-prices", "--tenant", str(tenant.id)],
                               env=env)
        assert seeded.exit_code == 0, seeded.output
        assert f"added {len(DEFAULT_PRICES)} price version(s)" in seeded.output
        again = runner.invoke(cli, ["agents", "seed-prices", "--tenant", str(tenant.id)],
                              env=env)
        assert "added 0 price version(s)" in again.output  # idempotent

        result = runner.invoke(cli, ["agents", "work", "--tenant", str(tenant.id), "--config",
                                     str(config), "--drain", "--id", "cli/1"], env=env)
        assert result.exit_code == 0, result.output
        assert "worked 2 task(s)" in result.output
        with tenant_transaction(app_pool, tenant.id) as conn:
            statuses = {r["status"] for r in conn.execute(
                "SELECT status::text AS status FROM tasks").fetchall()}
            calls = conn.execute("SELECT count(*) AS n FROM agent_calls").fetchone()["n"]
        assert statuses == {"Review"} and calls == 2
        assert len(fleet["openai"].received) == 2
    finally:
        for server in fleet.values():
            server.stop()


def test_work_without_the_key_says_which_variable_to_set(app_dsn, make_tenant, tmp_path):
    tenant = make_tenant("nokey")
    config = tmp_path / "agents.json"
    config.write_text(json.dumps({"deployments": [
        {"name": "gpt", "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
         "model": "gpt-4.1", "context_window": 1000, "api_key_env": "MISSING_KEY_VAR"}]}))
    result = runner.invoke(cli, ["agents", "work", "--tenant", str(tenant.id), "--config",
                                 str(config), "--drain"], env={"DATABASE_URL": app_dsn})
    assert result.exit_code == 2
    assert "set the environment variable MISSING_KEY_VAR" in result.output


def test_work_with_a_bad_config_is_a_clear_error(tmp_path):
    config = tmp_path / "agents.json"
    config.write_text('{"deployments": []}')
    result = runner.invoke(cli, ["agents", "work", "--tenant",
                                 "00000000-0000-0000-0000-000000000000", "--config",
                                 str(config)])
    assert result.exit_code == 2
    assert "deployments" in result.output


@pytest.mark.parametrize("command", ["agents work", "worker run"])
def test_both_worker_commands_refuse_an_unconfined_role_cleanly(command, owner_dsn, make_tenant,
                                                                tmp_path):
    """`vos agents work` and `vos worker run` share one composition root (app.main's
    serve_worker): pointed at the schema owner, both exit 1 with one `error:` line saying
    why and what to do, and no traceback."""
    tenant = make_tenant("unconfined")
    config = tmp_path / "agents.json"
    config.write_text(json.dumps({"deployments": [
        {"name": "gpt", "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
         "model": "gpt-4.1", "context_window": 1000, "api_key_env": "TEST_OAI_KEY"}]}))
    argv = {"agents work": ["agents", "work", "--config", str(config)],
            "worker run": ["worker", "run", "--handler",
                           "tests.integration.test_dispatch:summarise"]}[command]
    done = subprocess.run(
        [sys.executable, "-m", "cli", *argv, "--tenant", str(tenant.id), "--drain"],
        cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=120,
        env={**os.environ, "DATABASE_URL": owner_dsn,
             "TEST_OAI_KEY": "sk-test-cli-000000000000000000000"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: DATABASE_URL connects as "), \
        done.stderr
    assert "row-level security would not confine it" in done.stderr
