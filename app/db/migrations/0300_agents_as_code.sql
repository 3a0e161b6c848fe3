-- Agents as code (`vos agents apply`): the agents file owns these columns.
-- retired_at: an agent removed from the file is retired, never deleted (ledger rows, tasks and
--   events keep pointing at it); a retired agent takes no new work and leaves the org chart.
-- budget_period: the window agents.budget_usd applies to ('total' = for ever, the behaviour
--   before this migration; the file's default is 'month').
-- tools: the names of the tools the agent may use (declared in the file).
-- is_orchestrator: where unassigned work goes; at most one live orchestrator per tenant.
ALTER TABLE agents
  ADD COLUMN retired_at timestamptz,
  ADD COLUMN budget_period text NOT NULL DEFAULT 'total'
    CHECK (budget_period IN ('total', 'day', 'week', 'month')),
  ADD COLUMN tools jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(tools) = 'array'),
  ADD COLUMN is_orchestrator boolean NOT NULL DEFAULT false,
  ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

CREATE UNIQUE INDEX agents_one_orchestrator ON agents (tenant_id)
  WHERE is_orchestrator AND retired_at IS NULL;
