"""`vos agents apply|list|show` against a real Postgres: create, update, retire, idempotence,
dry run, bad files, price versions; through the real CLI where the operator would use it."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
from typer.testing import CliRunner

from app.agents.apply import apply_agents_file
from app.agents.prices import DEFAULT_PRICES
from app.agents.spec import parse_agents_text
from app.db import tenant_transaction
from cli import cli

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agents.yaml"

BASE = """\
deployments:
  - {name: local, provider: ollama, base_url: "http://127.0.0.1:11434", model: "llama3.1:8b",
     context_window: 8192, prices: {input_per_mtok: 0, output_per_mtok: 0}}
  - {name: sonnet, provider: anthropic, base_url: "https://api.anthropic.com",
     model: claude-sonnet-4-6, context_window: 200000, api_key_env: ANTHROPIC_API_KEY}
agents:
  - {name: Orchestrator, orchestrator: true, budget_usd: 50}
  - {name: CTO, manager: Orchestrator, role: Lead, chain: [sonnet], budget_usd: 30}
  - {name: Old, manager: CTO}
"""


def write(tmp_path: Path, text: str, name: str = "agents.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def snapshot(pool, tenant_id) -> dict[str, tuple]:
    """Every agent's row version (xmin) and updated_at: any UPDATE changes them."""
    with tenant_transaction(pool, tenant_id) as conn:
        return {r["name"]: (r["xmin"], r["updated_at"], r["retired_at"]) for r in conn.execute(
            "SELECT name, xmin::text AS xmin, updated_at, retired_at FROM agents").fetchall()}


def count_prices(pool, tenant_id) -> int:
    with tenant_transaction(pool, tenant_id) as conn:
        return conn.execute("SELECT count(*) AS n FROM model_prices").fetchone()["n"]


DEFAULT_POLICY = {"approval": {"delegate": False, "tools": []}, "max_steps": 8,
                  "task_budget_usd": None, "task_token_cap": None}
# Old with a run policy (its own line, the last: the other lines keep their numbers)
WITH_POLICY = BASE.replace("  - {name: Old, manager: CTO}\n", """\
  - {name: Old, manager: CTO, tools: [delegate, report], max_steps: 12,
     approval: {delegate: true, tools: [report]}, task_budget_usd: 0.50,
     task_token_cap: 5000}
""")


def test_apply_creates_then_a_second_apply_writes_nothing(app_pool, app_dsn, make_tenant,
                                                           tmp_path):
    tenant = make_tenant("apply")
    path = write(tmp_path, WITH_POLICY)
    env = {"DATABASE_URL": app_dsn}
    first = runner.invoke(cli, ["agents", "apply", path, "--tenant", str(tenant.id)], env=env)
    assert first.exit_code == 0, first.output
    for line in ("+ agent Orchestrator", "+ agent CTO", "+ agent Old",
                 f"+ prices: {len(DEFAULT_PRICES)} built-in list price(s)"):
        assert line in first.output
    with tenant_transaction(app_pool, tenant.id) as conn:
        rows = {r["name"]: r for r in conn.execute(
            "SELECT a.*, m.name AS manager FROM agents a "
            "LEFT JOIN agents m ON m.id = a.manager_id").fetchall()}
    assert rows["CTO"]["manager"] == "Orchestrator" and rows["Old"]["manager"] == "CTO"
    assert rows["CTO"]["model_preferences"] == {"chain": ["sonnet"]}
    assert rows["Old"]["model_preferences"] == {"chain": ["local", "sonnet"]}  # default_chain
    assert rows["Orchestrator"]["is_orchestrator"] and not rows["CTO"]["is_orchestrator"]
    assert rows["CTO"]["budget_usd"] == Decimal(30) and rows["CTO"]["budget_period"] == "month"
    assert rows["CTO"]["run_policy"] == DEFAULT_POLICY
    assert rows["Old"]["tools"] == ["delegate", "report"]
    assert rows["Old"]["run_policy"] == {
        "approval": {"delegate": True, "tools": ["report"]}, "max_steps": 12,
        "task_budget_usd": "0.5", "task_token_cap": 5000}
    # the ollama override equals the built-in $0 price: no extra version
    assert count_prices(app_pool, tenant.id) == len(DEFAULT_PRICES)

    before = snapshot(app_pool, tenant.id)
    again = runner.invoke(cli, ["agents", "apply", path, "--tenant", str(tenant.id)], env=env)
    assert again.exit_code == 0, again.output
    assert again.output.strip() == "no changes (3 agent(s) unchanged)"
    assert snapshot(app_pool, tenant.id) == before  # not one UPDATE: same xmin, updated_at
    assert count_prices(app_pool, tenant.id) == len(DEFAULT_PRICES)


def test_apply_updates_retires_and_un_retires_keeping_the_ledger(app_pool, make_tenant):
    tenant = make_tenant("converge")
    apply_agents_file(app_pool, tenant.id, parse_agents_text(BASE))
    with tenant_transaction(app_pool, tenant.id) as conn:
        old_id = conn.execute("SELECT id FROM agents WHERE name = 'Old'").fetchone()["id"]
        conn.execute(
            """INSERT INTO agent_calls (tenant_id, call_id, attempt_no, agent_id, provider,
                   deployment, model_requested, outcome, cost_usd)
               VALUES (%s, %s, 1, %s, 'ollama', 'local', 'llama3.1:8b', 'ok', 0)""",
            [tenant.id, uuid.uuid4(), old_id])
    before = snapshot(app_pool, tenant.id)

    changed = BASE.replace("budget_usd: 30}", "budget_usd: 40, budget_period: week}").replace(
        "  - {name: Old, manager: CTO}\n", "  - {name: New, manager: CTO, persona: Hi}\n")
    result = apply_agents_file(app_pool, tenant.id, parse_agents_text(changed))
    assert result.lines == ["- agent Old (retired)",
                            "~ agent CTO: budget_usd 30 → 40, budget_period month → week",
                            "+ agent New"]
    assert result.report().endswith("= 1 unchanged")
    after = snapshot(app_pool, tenant.id)
    assert after["Orchestrator"] == before["Orchestrator"]  # unchanged: not written
    assert after["Old"][2] is not None  # retired, still there
    with tenant_transaction(app_pool, tenant.id) as conn:
        ledger = conn.execute("SELECT count(*) AS n FROM agent_calls WHERE agent_id = %s",
                              [old_id]).fetchone()["n"]
    assert ledger == 1

    back = apply_agents_file(app_pool, tenant.id, parse_agents_text(
        changed + "  - {name: Old, manager: CTO, budget_usd: 2}\n"))
    assert back.lines == ["+ agent Old (un-retired): budget_usd 0 → 2"]
    with tenant_transaction(app_pool, tenant.id) as conn:
        row = conn.execute("SELECT id, retired_at FROM agents WHERE name = 'Old'").fetchone()
    assert row["id"] == old_id and row["retired_at"] is None  # the same agent, not a new one


def test_moving_the_orchestrator_and_managers(app_pool, make_tenant):
    tenant = make_tenant("move")
    apply_agents_file(app_pool, tenant.id, parse_agents_text(BASE))
    moved = BASE.replace("{name: Orchestrator, orchestrator: true,", "{name: Orchestrator,"
                         ).replace("{name: Old, manager: CTO}",
                                   "{name: Old, orchestrator: true}")
    result = apply_agents_file(app_pool, tenant.id, parse_agents_text(moved))
    assert sorted(result.lines) == ["~ agent Old: manager CTO → (none), is_orchestrator False → "
                                    "True",
                                    "~ agent Orchestrator: is_orchestrator True → False"]
    with tenant_transaction(app_pool, tenant.id) as conn:
        flagged = [r["name"] for r in conn.execute(
            "SELECT name FROM agents WHERE is_orchestrator").fetchall()]
    assert flagged == ["Old"]


def test_dry_run_and_bad_files_write_nothing(app_pool, app_dsn, make_tenant, tmp_path):
    tenant = make_tenant("dry")
    env = {"DATABASE_URL": app_dsn}
    dry = runner.invoke(cli, ["agents", "apply", write(tmp_path, BASE), "--tenant",
                              str(tenant.id), "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "dry run, nothing written" in dry.output and "+ agent CTO" in dry.output
    assert snapshot(app_pool, tenant.id) == {} and count_prices(app_pool, tenant.id) == 0

    bad = BASE.replace("budget_usd: 30", "budget_usd: -30")
    result = runner.invoke(cli, ["agents", "apply", write(tmp_path, bad, "bad.yaml"),
                                 "--tenant", str(tenant.id)], env=env)
    assert result.exit_code == 2
    assert "agents[1].budget_usd (line 8)" in result.output
    assert snapshot(app_pool, tenant.id) == {} and count_prices(app_pool, tenant.id) == 0


def test_a_price_override_is_a_new_version_only_when_it_changes(app_pool, make_tenant):
    tenant = make_tenant("prices")
    apply_agents_file(app_pool, tenant.id, parse_agents_text(BASE))
    priced = BASE.replace("context_window: 200000,",
                          "context_window: 200000, prices: {input_per_mtok: 2.5, "
                          "output_per_mtok: 12, cache_read_per_mtok: 0.25},")
    result = apply_agents_file(app_pool, tenant.id, parse_agents_text(priced))
    assert result.lines == ["~ price anthropic/claude-sonnet-4-6: 3/15/0.3/3.75 → "
                            "2.5/12/0.25/2.5 (in/out/cache read/cache write USD per Mtok)"]
    assert count_prices(app_pool, tenant.id) == len(DEFAULT_PRICES) + 1
    assert apply_agents_file(app_pool, tenant.id, parse_agents_text(priced)).changes == 0
    assert count_prices(app_pool, tenant.id) == len(DEFAULT_PRICES) + 1
    with tenant_transaction(app_pool, tenant.id) as conn:
        versions = conn.execute(
            "SELECT version, input_per_mtok FROM model_prices WHERE model = "
            "'claude-sonnet-4-6' ORDER BY effective_from").fetchall()
    assert [(v["version"], v["input_per_mtok"]) for v in versions] == [
        ("2025-11-public-list", Decimal("3.000000")), ("agents-file", Decimal("2.500000"))]


def test_slugs_create_tenant_list_and_show(owner_dsn, app_dsn, app_pool, make_tenant,
                                           tmp_path):
    slug = f"deploy-{uuid.uuid4().hex[:8]}"
    path = write(tmp_path, BASE)
    # a neighbour with the same agent names: the owner role bypasses RLS, and must still
    # converge only the tenant it was asked to
    neighbour = make_tenant("neighbour")
    apply_agents_file(app_pool, neighbour.id, parse_agents_text(BASE.replace("50", "7")))
    neighbour_before = snapshot(app_pool, neighbour.id)
    missing = runner.invoke(cli, ["agents", "apply", path, "--tenant", slug],
                            env={"DATABASE_URL": owner_dsn})
    assert missing.exit_code == 2 and "--create-tenant" in missing.output
    created = runner.invoke(cli, ["agents", "apply", path, "--tenant", slug, "--create-tenant"],
                            env={"DATABASE_URL": owner_dsn})
    assert created.exit_code == 0, created.output
    assert "+ agent CTO" in created.output
    with psycopg.connect(owner_dsn) as conn:
        (tenant_id,) = conn.execute("SELECT id FROM tenants WHERE slug = %s", [slug]).fetchone()
    assert snapshot(app_pool, neighbour.id) == neighbour_before
    assert len(snapshot(app_pool, tenant_id)) == 3

    # vos_app resolves a slug through tenant_id_for_slug() (RLS hides the tenants table)
    as_app = runner.invoke(cli, ["agents", "list", "--tenant", slug],
                           env={"DATABASE_URL": app_dsn})
    listed = runner.invoke(cli, ["agents", "list", "--tenant", str(tenant_id)],
                           env={"DATABASE_URL": app_dsn})
    assert listed.exit_code == 0, listed.output
    assert as_app.exit_code == 0 and as_app.output == listed.output, as_app.output
    unknown = runner.invoke(cli, ["agents", "list", "--tenant", "no-such-tenant"],
                            env={"DATABASE_URL": app_dsn})
    assert unknown.exit_code == 2 and "no tenant with slug 'no-such-tenant'" in unknown.output
    cto = next(line for line in listed.output.splitlines() if line.startswith("CTO "))
    assert "Orchestrator" in cto and "sonnet" in cto and "30/month" in cto

    shown = runner.invoke(cli, ["agents", "show", "Orchestrator", "--tenant", slug],
                          env={"DATABASE_URL": owner_dsn})
    assert shown.exit_code == 0, shown.output
    assert "orchestrator: yes" in shown.output and "50 USD per month" in shown.output
    nobody = runner.invoke(cli, ["agents", "show", "Nobody", "--tenant", slug],
                           env={"DATABASE_URL": owner_dsn})
    assert nobody.exit_code == 1 and "no agent named 'Nobody'" in nobody.output


def test_the_reference_example_applies_cleanly(app_pool, make_tenant):
    from app.agents.spec import load_agents_file

    tenant = make_tenant("example")
    result = apply_agents_file(app_pool, tenant.id, load_agents_file(EXAMPLE))
    assert [line for line in result.lines if line.startswith("+ agent")] == [
        "+ agent Orchestrator", "+ agent Marketing Lead", "+ agent Creative", "+ agent CTO"]
    assert not result.warnings  # every deployment's model has a price
    assert apply_agents_file(app_pool, tenant.id, load_agents_file(EXAMPLE)).changes == 0


def test_the_worker_reads_the_same_yaml_file(app_pool, app_dsn, make_tenant, tmp_path):
    from app.dispatch.tasks import create_task
    from devtools.fakes import start_fake_fleet

    fleet = start_fake_fleet(api_key="fake-key")
    try:
        tenant = make_tenant("yamlwork")
        path = write(tmp_path, f"""\
deployments:
  - name: gpt
    provider: openai
    base_url: {fleet["openai"].base_url}
    model: gpt-4.1
    context_window: 1000000
    max_output_tokens: 32
    api_key_env: TEST_OAI_KEY
worker: {{max_attempts: 2, idle_seconds: 0.1}}
agents:
  - {{name: Ops, budget_usd: 1}}
""")
        env = {"DATABASE_URL": app_dsn, "TEST_OAI_KEY": "fake-key"}
        applied = runner.invoke(cli, ["agents", "apply", path, "--tenant", str(tenant.id)],
                                env=env)
        assert applied.exit_code == 0, applied.output
        with tenant_transaction(app_pool, tenant.id) as conn:
            ops = conn.execute("SELECT id FROM agents WHERE name = 'Ops'").fetchone()["id"]
            create_task(conn, tenant.id, title="Check port 443", assignee_id=ops,
                        status="Active")
        worked = runner.invoke(cli, ["agents", "work", "--tenant", str(tenant.id), "--config",
                                     path, "--drain", "--id", "yaml/1"], env=env)
        assert worked.exit_code == 0, worked.output
        assert "worked 1 task(s)" in worked.output
        assert len(fleet["openai"].received) == 1
    finally:
        for server in fleet.values():
            server.stop()


def test_a_run_policy_change_is_one_diff_line_and_show_prints_it(app_pool, app_dsn,
                                                                  make_tenant, tmp_path):
    tenant = make_tenant("policy")
    apply_agents_file(app_pool, tenant.id, parse_agents_text(WITH_POLICY))
    before = snapshot(app_pool, tenant.id)
    changed = WITH_POLICY.replace("max_steps: 12", "max_steps: 20").replace(
        "task_budget_usd: 0.50", "task_budget_usd: 0.5")  # the same budget, written otherwise
    result = apply_agents_file(app_pool, tenant.id, parse_agents_text(changed))
    assert result.lines == ["~ agent Old: run policy (max_steps 12 → 20)"]
    after = snapshot(app_pool, tenant.id)
    assert after["CTO"] == before["CTO"] and after["Old"] != before["Old"]

    plain = apply_agents_file(app_pool, tenant.id, parse_agents_text(BASE))
    assert plain.lines == ["~ agent Old: tools [delegate, report] → [], run policy "
                           "(approval.delegate true → false; approval.tools [report] → []; "
                           "max_steps 20 → 8; task_budget_usd 0.5 → (none); task_token_cap "
                           "5000 → (none))"]
    # a row from before migration 0308 has an empty policy: the first apply sets it
    with tenant_transaction(app_pool, tenant.id) as conn:
        conn.execute("UPDATE agents SET run_policy = '{}' WHERE name = 'CTO'")
    result = apply_agents_file(app_pool, tenant.id, parse_agents_text(WITH_POLICY))
    assert sorted(result.lines) == [
        "~ agent CTO: run policy set (approval.delegate false, approval.tools [], max_steps 8, "
        "task_budget_usd (none), task_token_cap (none))",
        "~ agent Old: tools [] → [delegate, report], run policy (approval.delegate false → "
        "true; approval.tools [] → [report]; max_steps 8 → 12; task_budget_usd (none) → 0.5; "
        "task_token_cap (none) → 5000)"]

    env = {"DATABASE_URL": app_dsn}
    shown = runner.invoke(cli, ["agents", "show", "Old", "--tenant", str(tenant.id)], env=env)
    assert shown.exit_code == 0, shown.output
    for line in ("tools:        delegate, report",
                 "approval:     before delegating, before calling report",
                 "max steps:    12", "task caps:    0.5 USD and 5000 tokens per task"):
        assert line in shown.output, shown.output
    plain = runner.invoke(cli, ["agents", "show", "CTO", "--tenant", str(tenant.id)], env=env)
    assert "approval:     -" in plain.output and "task caps:    -" in plain.output
    assert "max steps:    8" in plain.output
