-- Ledger rollup: the Command Center's whole-ledger cost views read a per-day summary that
-- triggers keep current in the writer's transaction, instead of aggregating every
-- agent_calls row on each read (about 1 s at 100,000 rows; the issue's budget is 200 ms).
--
-- One rollup row per (tenant, UTC day, agent, provider, model requested, model served,
-- denied). `denied` (outcome = 'budget_denied') is part of the key for two reasons: the
-- per-call view leaves denials out, and denial rows are written by `budgets.reserve` while
-- it holds the agent's agent_spend lock, whereas settled attempts are written *before*
-- `budgets.settle` takes that lock. Sharing a rollup row between the two paths would lock
-- the two rows in opposite orders and could deadlock; separate keys never share a row.
--
-- Distinct-call counts are not additive, so each logical call is counted once, on the
-- rollup row of its first attempt: `calls` on its first non-denied attempt (per tenant),
-- `ok_calls` on its first 'ok' attempt (per tenant and agent). Summed over any set of rows
-- of one tenant (or one agent) they equal count(DISTINCT call_id) of the old views.

CREATE TABLE agent_cost_daily (
  tenant_id             uuid NOT NULL REFERENCES tenants (id),
  day                   date NOT NULL,  -- (created_at AT TIME ZONE 'UTC')::date
  agent_id              uuid NOT NULL,
  provider              text NOT NULL,
  model_requested       text NOT NULL,
  model_served          text,
  denied                boolean NOT NULL,
  attempts              bigint NOT NULL,
  ok_attempts           bigint NOT NULL,
  failed_attempts       bigint NOT NULL,  -- outcome not in ('ok', 'budget_denied')
  calls                 bigint NOT NULL,  -- calls whose first non-denied attempt is here
  ok_calls              bigint NOT NULL,  -- calls whose first 'ok' attempt is here
  cost_usd              numeric NOT NULL,
  uncached_input_tokens bigint NOT NULL,
  cache_read_tokens     bigint NOT NULL,
  cache_write_tokens    bigint NOT NULL,
  output_tokens         bigint NOT NULL,
  UNIQUE NULLS NOT DISTINCT
    (tenant_id, day, agent_id, provider, model_requested, model_served, denied),
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);
CREATE INDEX agent_cost_daily_agent ON agent_cost_daily (tenant_id, agent_id);

-- AFTER INSERT, once per statement: summarise the inserted rows and upsert them.
CREATE FUNCTION agent_cost_daily_on_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  new_calls uuid[];
BEGIN
  -- Whether an attempt is its call's first is decided against the committed ledger, so two
  -- transactions writing attempts of the same call must not both decide "first". The
  -- router writes a call's attempts one after another, so this lock never waits in
  -- practice; bulk loads (more than 64 calls in one statement) skip it to stay within the
  -- lock table and must not race live writers of the same call ids.
  SELECT array_agg(DISTINCT r.call_id ORDER BY r.call_id) INTO new_calls FROM new_rows r;
  IF cardinality(new_calls) <= 64 THEN
    PERFORM pg_advisory_xact_lock(hashtextextended('agent_calls.call_id:' || c::text, 0))
       FROM unnest(new_calls) AS c;
  END IF;

  INSERT INTO agent_cost_daily AS d
  SELECT f.tenant_id, (f.created_at AT TIME ZONE 'UTC')::date, f.agent_id, f.provider,
         f.model_requested, f.model_served, f.outcome = 'budget_denied',
         count(*), count(*) FILTER (WHERE f.outcome = 'ok'),
         count(*) FILTER (WHERE f.outcome NOT IN ('ok', 'budget_denied')),
         count(*) FILTER (WHERE f.first_call), count(*) FILTER (WHERE f.first_ok),
         sum(f.cost_usd), sum(f.uncached_input_tokens), sum(f.cache_read_tokens),
         sum(f.cache_write_tokens), sum(f.output_tokens)
    FROM (SELECT n.*,
                 n.outcome <> 'budget_denied' AND n.nd_rank = 1
                   AND seen.nd = n.nd_new AS first_call,   -- no earlier non-denied attempt
                 n.outcome = 'ok' AND n.ok_rank = 1
                   AND seen.ok = n.ok_new AS first_ok      -- no earlier ok attempt
            FROM (SELECT r.*,
                         row_number() OVER nd AS nd_rank,
                         count(*) FILTER (WHERE r.outcome <> 'budget_denied') OVER call
                           AS nd_new,
                         row_number() OVER ok AS ok_rank,
                         count(*) FILTER (WHERE r.outcome = 'ok') OVER call_agent AS ok_new
                    FROM new_rows r
                  WINDOW nd AS (PARTITION BY r.tenant_id, r.call_id,
                                             r.outcome <> 'budget_denied' ORDER BY r.id),
                         ok AS (PARTITION BY r.tenant_id, r.call_id, r.agent_id,
                                             r.outcome = 'ok' ORDER BY r.id),
                         call AS (PARTITION BY r.tenant_id, r.call_id),
                         call_agent AS (PARTITION BY r.tenant_id, r.call_id, r.agent_id)
                 ) n
            -- Every visible ledger row of the inserted calls, the new ones included: a new
            -- row is its call's first when the call has no rows beyond this statement's.
            JOIN (SELECT c.tenant_id, c.call_id, c.agent_id,
                         count(*) FILTER (WHERE c.outcome <> 'budget_denied')
                           OVER (PARTITION BY c.tenant_id, c.call_id) AS nd,
                         count(*) FILTER (WHERE c.outcome = 'ok')
                           OVER (PARTITION BY c.tenant_id, c.call_id, c.agent_id) AS ok,
                         c.id
                    FROM agent_calls c
                   WHERE c.call_id IN (SELECT call_id FROM new_rows)) seen
              ON seen.id = n.id
         ) f
   GROUP BY 1, 2, 3, 4, 5, 6, 7
  ON CONFLICT (tenant_id, day, agent_id, provider, model_requested, model_served, denied)
  DO UPDATE SET attempts = d.attempts + EXCLUDED.attempts,
                ok_attempts = d.ok_attempts + EXCLUDED.ok_attempts,
                failed_attempts = d.failed_attempts + EXCLUDED.failed_attempts,
                calls = d.calls + EXCLUDED.calls,
                ok_calls = d.ok_calls + EXCLUDED.ok_calls,
                cost_usd = d.cost_usd + EXCLUDED.cost_usd,
                uncached_input_tokens = d.uncached_input_tokens + EXCLUDED.uncached_input_tokens,
                cache_read_tokens = d.cache_read_tokens + EXCLUDED.cache_read_tokens,
                cache_write_tokens = d.cache_write_tokens + EXCLUDED.cache_write_tokens,
                output_tokens = d.output_tokens + EXCLUDED.output_tokens;
  RETURN NULL;
END
$$;

-- Recompute the rollup of some tenants from the ledger: the backfill below, and the repair
-- after an UPDATE or DELETE of ledger rows (the app never does either: vos_app may only
-- INSERT; an owner's correction costs one full re-aggregation of the tenants it touched).
-- Example (as the owner): SELECT agent_cost_daily_rebuild(ARRAY['…tenant uuid…']::uuid[]);
CREATE FUNCTION agent_cost_daily_rebuild(tenant_ids uuid[]) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
  DELETE FROM agent_cost_daily WHERE tenant_id = ANY (tenant_ids);
  INSERT INTO agent_cost_daily
  SELECT f.tenant_id, (f.created_at AT TIME ZONE 'UTC')::date, f.agent_id, f.provider,
         f.model_requested, f.model_served, f.outcome = 'budget_denied',
         count(*), count(*) FILTER (WHERE f.outcome = 'ok'),
         count(*) FILTER (WHERE f.outcome NOT IN ('ok', 'budget_denied')),
         count(*) FILTER (WHERE f.first_call), count(*) FILTER (WHERE f.first_ok),
         sum(f.cost_usd), sum(f.uncached_input_tokens), sum(f.cache_read_tokens),
         sum(f.cache_write_tokens), sum(f.output_tokens)
    FROM (SELECT c.*,
                 c.outcome <> 'budget_denied' AND row_number() OVER (
                   PARTITION BY c.tenant_id, c.call_id, c.outcome <> 'budget_denied'
                   ORDER BY c.id) = 1 AS first_call,
                 c.outcome = 'ok' AND row_number() OVER (
                   PARTITION BY c.tenant_id, c.call_id, c.agent_id, c.outcome = 'ok'
                   ORDER BY c.id) = 1 AS first_ok
            FROM agent_calls c
           WHERE c.tenant_id = ANY (tenant_ids)) f
   GROUP BY 1, 2, 3, 4, 5, 6, 7;
$$;
REVOKE EXECUTE ON FUNCTION agent_cost_daily_rebuild(uuid[]) FROM PUBLIC;

CREATE FUNCTION agent_cost_daily_on_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    TRUNCATE agent_cost_daily;
  ELSIF TG_OP = 'UPDATE' THEN
    PERFORM agent_cost_daily_rebuild(ARRAY(SELECT tenant_id FROM old_rows
                                           UNION SELECT tenant_id FROM new_rows));
  ELSE
    PERFORM agent_cost_daily_rebuild(ARRAY(SELECT DISTINCT tenant_id FROM old_rows));
  END IF;
  RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION agent_cost_daily_on_insert(), agent_cost_daily_on_change()
  FROM PUBLIC;

-- Writers wait while the trigger is created and the rollup backfilled, so no ledger row is
-- counted twice or missed. The owner reads every tenant's rows for the backfill: agent_calls
-- forces row-level security even on its owner, so lift FORCE for this transaction only.
LOCK TABLE agent_calls IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER agent_cost_daily_insert AFTER INSERT ON agent_calls
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION agent_cost_daily_on_insert();
CREATE TRIGGER agent_cost_daily_update AFTER UPDATE ON agent_calls
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION agent_cost_daily_on_change();
CREATE TRIGGER agent_cost_daily_delete AFTER DELETE ON agent_calls
  REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION agent_cost_daily_on_change();
CREATE TRIGGER agent_cost_daily_truncate AFTER TRUNCATE ON agent_calls
  FOR EACH STATEMENT EXECUTE FUNCTION agent_cost_daily_on_change();

ALTER TABLE agent_calls NO FORCE ROW LEVEL SECURITY;
SELECT agent_cost_daily_rebuild(ARRAY(SELECT DISTINCT tenant_id FROM agent_calls));
ALTER TABLE agent_calls FORCE ROW LEVEL SECURITY;

ALTER TABLE agent_cost_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_cost_daily FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_cost_daily
  USING (tenant_id = current_setting('app.tenant_id')::uuid)
  WITH CHECK (tenant_id = current_setting('app.tenant_id')::uuid);
-- Read-only for the app: only the SECURITY DEFINER trigger functions (run as the owner)
-- write it, so the rollup cannot drift from the ledger through the app role.
GRANT SELECT ON agent_cost_daily TO vos_app;

-- The three whole-ledger views, now over the rollup. Same columns, types and meaning as in
-- 0100. `cost_today` still reads today's ledger rows (index agent_calls_recent) so "today"
-- keeps following the session's time zone, like agent_cost_today; the rollup's days are
-- UTC days.
CREATE OR REPLACE VIEW agent_cost_per_call WITH (security_invoker = true) AS
  SELECT tenant_id,
         sum(calls)::bigint AS calls,
         sum(cost_usd) / sum(calls) AS avg_cost_usd,
         sum(uncached_input_tokens + cache_read_tokens + cache_write_tokens) / sum(calls)
           AS avg_input_tokens,
         sum(attempts) / sum(calls) AS avg_attempts
    FROM agent_cost_daily
   WHERE NOT denied
   GROUP BY tenant_id;

CREATE OR REPLACE VIEW agent_cost_by_model WITH (security_invoker = true) AS
  SELECT tenant_id, provider, model_requested,
         array_agg(DISTINCT model_served) FILTER (WHERE model_served IS NOT NULL)
           AS models_served,
         sum(ok_attempts)::bigint AS ok_attempts,
         sum(attempts)::bigint AS attempts,
         sum(cost_usd) AS cost_usd,
         sum(uncached_input_tokens)::bigint AS uncached_input_tokens,
         sum(cache_read_tokens)::bigint AS cache_read_tokens,
         sum(cache_write_tokens)::bigint AS cache_write_tokens,
         sum(output_tokens)::bigint AS output_tokens
    FROM agent_cost_daily
   GROUP BY tenant_id, provider, model_requested;

CREATE OR REPLACE VIEW agent_cost_by_agent WITH (security_invoker = true) AS
  SELECT r.tenant_id, r.agent_id, a.name AS agent_name,
         max(r.ok_calls)::bigint AS calls,
         max(r.cost_usd) AS cost_usd,
         max(t.cost_today) AS cost_today,
         max(a.budget_usd) AS budget_usd,
         max(s.spent_usd) AS spent_usd
    FROM (SELECT tenant_id, agent_id, sum(ok_calls) AS ok_calls, sum(cost_usd) AS cost_usd
            FROM agent_cost_daily
           GROUP BY tenant_id, agent_id) r
    JOIN agents a ON a.id = r.agent_id
    LEFT JOIN agent_spend s ON s.agent_id = r.agent_id
    LEFT JOIN (SELECT agent_id, sum(cost_usd) AS cost_today
                 FROM agent_calls
                WHERE created_at >= date_trunc('day', now())
                GROUP BY agent_id) t ON t.agent_id = r.agent_id
   GROUP BY r.tenant_id, r.agent_id, a.name;
