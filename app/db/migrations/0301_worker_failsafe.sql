-- A worker that fails safely (app/dispatch/worker.py): failure is a state, not a loop.
--
-- tasks.attempts / next_attempt_at / last_error: a failed attempt releases the claim with a
--   backoff; the claim skips the task until next_attempt_at; after WorkerPolicy.max_attempts
--   the task becomes 'Failed' (retry: Failed -> Active resets the three, enforced below).
-- tasks.parked_*: a budget denial parks the task (it stays Active but is not claimable) until
--   the agent's budget_usd differs from parked_budget_usd or a new budget window started
--   after parked_at (budget_period_start below).
-- agent_spend.period_start: spent_usd is the spend of the window starting there; the first
--   reservation in a newer window resets it (the ledger, agent_calls, keeps all history).
--
-- This file runs in the same transaction as the ALTER TYPE below, so nothing here may use the
-- new 'Failed' label as a task_status value: functions are plpgsql and compare ::text.

ALTER TYPE task_status ADD VALUE IF NOT EXISTS 'Failed';

ALTER TABLE tasks
  ADD COLUMN attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  ADD COLUMN next_attempt_at   timestamptz,
  ADD COLUMN last_error        text CHECK (length(last_error) <= 2000),
  ADD COLUMN parked_at         timestamptz,
  ADD COLUMN parked_reason     text CHECK (length(parked_reason) <= 2000),
  ADD COLUMN parked_agent_id   uuid,
  ADD COLUMN parked_amount_usd numeric(14, 8),
  ADD COLUMN parked_budget_usd numeric(12, 4),
  ADD FOREIGN KEY (tenant_id, parked_agent_id) REFERENCES agents (tenant_id, id),
  ADD CHECK ((parked_at IS NULL) = (parked_agent_id IS NULL));

ALTER TABLE agent_spend
  -- now(): an existing row's spend is taken to be of the current window (it is for 'total',
  -- the only period agents had before 0300).
  ADD COLUMN period_start timestamptz NOT NULL DEFAULT now();

-- The start (UTC) of the budget window `at` falls in: day, ISO week (Monday), month;
-- 'total' never rolls over (-infinity).
CREATE FUNCTION budget_period_start(period text, at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
  IF period = 'total' THEN
    RETURN '-infinity'::timestamptz;
  ELSIF period IN ('day', 'week', 'month') THEN
    RETURN date_trunc(period, at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
  END IF;
  RAISE EXCEPTION 'unknown budget period %', period USING ERRCODE = 'check_violation';
END
$$;

-- The status machine (Python twin: app/dispatch/status.py):
-- Draft -> Active -> Review -> Approved, Review -> Rejected -> Active,
-- Active -> Failed (out of attempts) -> Active (retry),
-- Active -> Draft only with a reason in last_error (the worker found no agent to route to).
CREATE OR REPLACE FUNCTION task_status_allowed(old task_status, new task_status)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN (old::text, new::text) IN (
    ('Draft', 'Active'), ('Active', 'Review'), ('Review', 'Approved'),
    ('Review', 'Rejected'), ('Rejected', 'Active'), ('Active', 'Failed'),
    ('Failed', 'Active'), ('Active', 'Draft'));
END
$$;

CREATE OR REPLACE FUNCTION tasks_before_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.status::text NOT IN ('Draft', 'Active') THEN
      RAISE EXCEPTION 'a new task starts as Draft or Active, not %', NEW.status
        USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
    RAISE EXCEPTION 'a task cannot move to another tenant' USING ERRCODE = 'check_violation';
  END IF;
  IF NEW.status IS DISTINCT FROM OLD.status THEN
    IF NOT task_status_allowed(OLD.status, NEW.status) THEN
      RAISE EXCEPTION 'task status cannot move from % to %', OLD.status, NEW.status
        USING ERRCODE = 'check_violation',
              HINT = 'allowed: Draft->Active->Review->Approved, Review->Rejected->Active, '
                     'Active->Failed->Active';
    END IF;
    IF OLD.status::text = 'Active' AND NEW.status::text = 'Draft'
       AND (NEW.last_error IS NULL OR NEW.last_error IS NOT DISTINCT FROM OLD.last_error) THEN
      RAISE EXCEPTION 'task status cannot move from Active to Draft without a reason'
        USING ERRCODE = 'check_violation',
              HINT = 'only the worker sends a task back to Draft, with the reason in last_error';
    END IF;
    -- A retry starts afresh: whoever moves Failed -> Active (API, UI, SQL) resets the count.
    IF OLD.status::text = 'Failed' AND NEW.status::text = 'Active' THEN
      NEW.attempts := 0;
      NEW.next_attempt_at := NULL;
      NEW.last_error := NULL;
    END IF;
    -- Parking only means something to Active tasks.
    IF NEW.status::text <> 'Active' THEN
      NEW.parked_at := NULL;
      NEW.parked_reason := NULL;
      NEW.parked_agent_id := NULL;
      NEW.parked_amount_usd := NULL;
      NEW.parked_budget_usd := NULL;
    END IF;
  END IF;
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

-- The lease heartbeat renews lease_until every few seconds while work runs: that alone is
-- not news, so it writes no task_event (a claim or release still does: claimed_by changes).
CREATE OR REPLACE FUNCTION tasks_after_write() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  changes jsonb;
  kind    text;
  actor   text := nullif(current_setting('app.actor', true), '');
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO task_events (tenant_id, task_id, kind, payload)
    VALUES (NEW.tenant_id, NEW.id, 'created', jsonb_build_object(
      'actor', actor, 'status', NEW.status, 'priority', NEW.priority,
      'assignee_id', NEW.assignee_id, 'title', NEW.title));
    RETURN NULL;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO task_events (tenant_id, task_id, kind, payload)
    VALUES (OLD.tenant_id, OLD.id, 'deleted',
            jsonb_build_object('actor', actor, 'status', OLD.status));
    RETURN NULL;
  END IF;
  SELECT jsonb_object_agg(n.key, jsonb_build_array(o.value, n.value)) INTO changes
    FROM jsonb_each(to_jsonb(NEW)) n JOIN jsonb_each(to_jsonb(OLD)) o USING (key)
   WHERE n.value IS DISTINCT FROM o.value AND n.key NOT IN ('updated_at');
  IF changes IS NULL OR (changes - 'lease_until') = '{}'::jsonb THEN
    RETURN NULL;  -- nothing changed (or only the lease was renewed): nothing to say
  END IF;
  kind := CASE
    WHEN changes ? 'status' THEN 'status_changed'
    WHEN changes ? 'claimed_by' AND NEW.claimed_by IS NOT NULL THEN 'claimed'
    WHEN changes ? 'claimed_by' THEN 'released'
    WHEN changes ? 'assignee_id' THEN 'assigned'
    ELSE 'updated' END;
  INSERT INTO task_events (tenant_id, task_id, kind, payload)
  VALUES (NEW.tenant_id, NEW.id, kind, jsonb_build_object('actor', actor, 'changes', changes));
  RETURN NULL;
END
$$;
