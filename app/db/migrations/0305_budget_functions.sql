-- Spend changes only through functions (app/agents/budgets.py calls them).
--
-- Before this migration vos_app could INSERT/UPDATE agent_spend and budget_reservations, so a
-- compromised app (or a bug) could reset what an agent has spent. Now the app role may only
-- read those tables; the four SECURITY DEFINER functions below, owned by the schema owner, are
-- the only writers and do exactly what budgets.py did in SQL before: the agent_spend row lock,
-- the budget-period rollover, the budget check.
--
-- SECURITY DEFINER runs as the owner, who bypasses row-level security when it is a superuser
-- (it is in the test cluster), so each function filters by current_setting('app.tenant_id')
-- EXPLICITLY: a tenant can only touch its own agents and reservations.
--
-- Overshoot: a settle whose actual cost exceeds the reservation's worst case (impossible with
-- the byte bound of app/agents/tokens.py, unless a provider bills unexpectedly, e.g. after a
-- price change) is recorded in budget_overshoots and STOPS the agent: agent_spend.stopped_*
-- make every further reservation a denial until an operator changes agents.budget_usd (the
-- same change that unparks its tasks, app/dispatch/worker.py) or calls budget_resume(agent).
--
-- Example (as vos_app, inside a tenant transaction):
--   SELECT * FROM budget_reserve('…agent…', gen_random_uuid(), 0.0042);
--   SELECT * FROM budget_settle(17, 0.0031);
--   SELECT budget_expire_stale(900, 500);

ALTER TABLE agent_spend
  ADD COLUMN stopped_at         timestamptz,
  ADD COLUMN stopped_reason     text CHECK (length(stopped_reason) <= 2000),
  ADD COLUMN stopped_budget_usd numeric(12, 4),  -- agents.budget_usd when it stopped
  ADD CHECK ((stopped_at IS NULL) = (stopped_reason IS NULL));

CREATE TABLE budget_overshoots (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id      uuid NOT NULL REFERENCES tenants (id),
  agent_id       uuid NOT NULL,
  reservation_id bigint NOT NULL REFERENCES budget_reservations (id),
  call_id        uuid NOT NULL,
  estimated_usd  numeric(14, 8) NOT NULL,
  actual_usd     numeric(14, 8) NOT NULL,
  overshoot_usd  numeric(14, 8) NOT NULL CHECK (overshoot_usd > 0),
  created_at     timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);
CREATE INDEX budget_overshoots_agent ON budget_overshoots (tenant_id, agent_id, created_at);
ALTER TABLE budget_overshoots ENABLE ROW LEVEL SECURITY;
ALTER TABLE budget_overshoots FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON budget_overshoots
  USING (tenant_id = current_setting('app.tenant_id')::uuid)
  WITH CHECK (tenant_id = current_setting('app.tenant_id')::uuid);
GRANT SELECT ON budget_overshoots TO vos_app;

REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON agent_spend, budget_reservations FROM vos_app;
GRANT SELECT ON agent_spend, budget_reservations TO vos_app;

-- The caller's tenant, or an error: the functions never act without one.
CREATE FUNCTION budget_tenant() RETURNS uuid
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
  t text := nullif(current_setting('app.tenant_id', true), '');
BEGIN
  IF t IS NULL THEN
    RAISE EXCEPTION 'app.tenant_id is not set: budget functions run inside a tenant transaction'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN t::uuid;
END
$$;

-- Reserve p_estimate USD for one attempt of call p_call under the agent's spend-row lock.
-- reservation is NULL when refused (over budget, or stopped: stop_reason says why); the other
-- columns are the figures the refusal is explained with.
CREATE FUNCTION budget_reserve(p_agent uuid, p_call uuid, p_estimate numeric,
                               OUT reservation bigint, OUT spent numeric, OUT reserved numeric,
                               OUT budget numeric, OUT period text, OUT stop_reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  tenant       uuid := budget_tenant();
  v_start      timestamptz;
  v_stopped_at timestamptz;
  v_stop_at_budget numeric;
BEGIN
  IF p_agent IS NULL OR p_call IS NULL THEN
    RAISE EXCEPTION 'budget_reserve: agent and call are required'
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF p_estimate IS NULL OR p_estimate < 0 THEN
    RAISE EXCEPTION 'budget_reserve: estimate must be a USD amount >= 0, got %', p_estimate
      USING ERRCODE = 'check_violation';
  END IF;
  INSERT INTO agent_spend (tenant_id, agent_id)
    SELECT a.tenant_id, a.id FROM agents a WHERE a.id = p_agent AND a.tenant_id = tenant
  ON CONFLICT DO NOTHING;
  SELECT s.spent_usd, s.reserved_usd, a.budget_usd, a.budget_period, s.period_start,
         s.stopped_at, s.stopped_reason, s.stopped_budget_usd
    INTO spent, reserved, budget, period, v_start, v_stopped_at, stop_reason,
         v_stop_at_budget
    FROM agent_spend s JOIN agents a ON a.id = s.agent_id AND a.tenant_id = s.tenant_id
   WHERE s.agent_id = p_agent AND s.tenant_id = tenant
     FOR UPDATE OF s;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'agent % does not exist in this tenant', p_agent
      USING ERRCODE = 'no_data_found';
  END IF;
  IF v_start < budget_period_start(period, now()) THEN
    -- a new window: the old one's spend no longer counts (the ledger keeps all history)
    UPDATE agent_spend SET spent_usd = 0, period_start = budget_period_start(period, now()),
                           updated_at = now()
     WHERE agent_id = p_agent AND tenant_id = tenant;
    spent := 0;
  END IF;
  IF v_stopped_at IS NOT NULL THEN
    IF budget IS NOT DISTINCT FROM v_stop_at_budget THEN
      RETURN;  -- stopped after an overshoot: refuse until an operator acts
    END IF;
    -- the operator changed the budget since the stop: that is the decision to go on
    UPDATE agent_spend SET stopped_at = NULL, stopped_reason = NULL,
                           stopped_budget_usd = NULL, updated_at = now()
     WHERE agent_id = p_agent AND tenant_id = tenant;
    stop_reason := NULL;
  END IF;
  IF spent + reserved + p_estimate > budget THEN
    RETURN;
  END IF;
  UPDATE agent_spend SET reserved_usd = reserved_usd + p_estimate, updated_at = now()
   WHERE agent_id = p_agent AND tenant_id = tenant;
  INSERT INTO budget_reservations (tenant_id, agent_id, call_id, estimated_usd)
  VALUES (tenant, p_agent, p_call, p_estimate)
  RETURNING id INTO reservation;
END
$$;

-- Turn an open reservation into spend: release its estimate, add the actual cost. settled is
-- false when the reservation is not an open one of this tenant (nothing changes). An actual
-- above the estimate is recorded in budget_overshoots and stops the agent.
CREATE FUNCTION budget_settle(p_reservation bigint, p_actual numeric,
                              OUT settled boolean, OUT overshoot numeric)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  tenant  uuid := budget_tenant();
  v_agent uuid;
  v_call  uuid;
  v_est   numeric;
BEGIN
  IF p_actual IS NULL OR p_actual < 0 THEN
    RAISE EXCEPTION 'budget_settle: actual must be a USD amount >= 0, got %', p_actual
      USING ERRCODE = 'check_violation';
  END IF;
  UPDATE budget_reservations b SET status = 'settled', actual_usd = p_actual,
                                   settled_at = now()
   WHERE b.id = p_reservation AND b.tenant_id = tenant AND b.status = 'open'
  RETURNING b.agent_id, b.call_id, b.estimated_usd INTO v_agent, v_call, v_est;
  IF NOT FOUND THEN
    settled := false;
    overshoot := 0;
    RETURN;
  END IF;
  UPDATE agent_spend SET reserved_usd = reserved_usd - v_est,
                         spent_usd = spent_usd + p_actual, updated_at = now()
   WHERE agent_id = v_agent AND tenant_id = tenant;
  settled := true;
  overshoot := greatest(p_actual - v_est, 0);
  IF overshoot > 0 THEN
    INSERT INTO budget_overshoots (tenant_id, agent_id, reservation_id, call_id,
                                   estimated_usd, actual_usd, overshoot_usd)
    VALUES (tenant, v_agent, p_reservation, v_call, v_est, p_actual, overshoot);
    UPDATE agent_spend s
       SET stopped_at = now(), updated_at = now(),
           stopped_budget_usd = (SELECT a.budget_usd FROM agents a
                                  WHERE a.id = v_agent AND a.tenant_id = tenant),
           stopped_reason = format(
             'call %s cost $%s, $%s more than its reserved worst case $%s; the agent is '
             'stopped until an operator changes agents.budget_usd or runs '
             'SELECT budget_resume(''%s'')', v_call, p_actual, overshoot, v_est, v_agent)
     WHERE s.agent_id = v_agent AND s.tenant_id = tenant;
  END IF;
END
$$;

-- Settle reservations left open by a crashed caller at their full estimate (the provider may
-- have billed the attempt), oldest first, at most p_limit (NULL: all). Returns how many.
CREATE FUNCTION budget_expire_stale(p_older_than_seconds double precision, p_limit integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  tenant uuid := budget_tenant();
  r      record;
  n      integer := 0;
BEGIN
  IF p_older_than_seconds IS NULL OR p_older_than_seconds < 0 THEN
    RAISE EXCEPTION 'budget_expire_stale: older_than_seconds must be >= 0, got %',
      p_older_than_seconds USING ERRCODE = 'check_violation';
  END IF;
  IF p_limit IS NOT NULL AND p_limit < 0 THEN
    RAISE EXCEPTION 'budget_expire_stale: limit must be >= 0, got %', p_limit
      USING ERRCODE = 'check_violation';
  END IF;
  FOR r IN
    UPDATE budget_reservations SET status = 'settled', actual_usd = estimated_usd,
                                   settled_at = now()
     WHERE id IN (SELECT b.id FROM budget_reservations b
                   WHERE b.tenant_id = tenant AND b.status = 'open'
                     AND b.created_at < now() - make_interval(secs => p_older_than_seconds)
                   ORDER BY b.id LIMIT p_limit
                     FOR UPDATE SKIP LOCKED)
    RETURNING agent_id, estimated_usd
  LOOP
    UPDATE agent_spend SET reserved_usd = reserved_usd - r.estimated_usd,
                           spent_usd = spent_usd + r.estimated_usd, updated_at = now()
     WHERE agent_id = r.agent_id AND tenant_id = tenant;
    n := n + 1;
  END LOOP;
  RETURN n;
END
$$;

-- An operator's explicit "go on" after an overshoot stop, without changing the budget.
-- Returns whether the agent was stopped.
CREATE FUNCTION budget_resume(p_agent uuid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  tenant uuid := budget_tenant();
BEGIN
  UPDATE agent_spend SET stopped_at = NULL, stopped_reason = NULL, stopped_budget_usd = NULL,
                         updated_at = now()
   WHERE agent_id = p_agent AND tenant_id = tenant AND stopped_at IS NOT NULL;
  RETURN FOUND;
END
$$;

REVOKE ALL ON FUNCTION budget_tenant(), budget_reserve(uuid, uuid, numeric),
  budget_settle(bigint, numeric), budget_expire_stale(double precision, integer),
  budget_resume(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION budget_reserve(uuid, uuid, numeric), budget_settle(bigint, numeric),
  budget_expire_stale(double precision, integer), budget_resume(uuid) TO vos_app;
