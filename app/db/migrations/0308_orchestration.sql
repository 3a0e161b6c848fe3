-- Orchestration (issue #16): parent and child tasks, runs paused for a reason or an operator's
-- approval, cancellation, and agents paused by a failure streak.
--
-- tasks.parent_id / depth: a delegated task's parent (same tenant: composite key, because FK
--   checks bypass row-level security) and its depth in the tree (parent's + 1, set by the
--   trigger, capped at 5 so a delegation loop ends).
-- tasks.paused_reason / paused_at: why a run stopped (circuit breaker, pending approval);
--   required to enter Paused, cleared on leaving it (trigger).
-- tasks.run_state: the run's persisted conversation (app/agents/run.py; opaque here). Its
--   changes write no task_event: the feed would otherwise carry whole conversations.
-- agents.paused_at / paused_reason / failure_streak: an agent that failed N tasks in a row
--   takes no work (the worker skips its tasks) until an operator resumes it.
-- agents.run_policy: approval gates, step cap and per-task caps from the agents file.
-- tool_approvals: a tool call waiting for an operator; at most one pending per task.
--
-- This file runs in the same transaction as the ALTER TYPEs below (the migrator applies a whole
-- run in one), so nothing here may use a new label as a task_status value: the functions
-- compare ::text, as 0301 does.

ALTER TYPE task_status ADD VALUE IF NOT EXISTS 'Waiting';
ALTER TYPE task_status ADD VALUE IF NOT EXISTS 'Paused';
ALTER TYPE task_status ADD VALUE IF NOT EXISTS 'Cancelled';

ALTER TABLE tasks
  ADD COLUMN parent_id     uuid,
  ADD COLUMN depth         integer NOT NULL DEFAULT 0 CHECK (depth BETWEEN 0 AND 5),
  ADD COLUMN paused_reason text CHECK (length(paused_reason) BETWEEN 1 AND 2000),
  ADD COLUMN paused_at     timestamptz,
  ADD COLUMN run_state     jsonb,
  ADD FOREIGN KEY (tenant_id, parent_id) REFERENCES tasks (tenant_id, id),
  ADD CHECK (parent_id IS DISTINCT FROM id),
  ADD CHECK ((parent_id IS NULL) = (depth = 0)),
  ADD CHECK ((paused_at IS NULL) = (paused_reason IS NULL));
CREATE INDEX tasks_parent ON tasks (tenant_id, parent_id) WHERE parent_id IS NOT NULL;

ALTER TABLE agents
  ADD COLUMN paused_at      timestamptz,
  ADD COLUMN paused_reason  text CHECK (length(paused_reason) BETWEEN 1 AND 2000),
  ADD COLUMN failure_streak integer NOT NULL DEFAULT 0 CHECK (failure_streak >= 0),
  ADD COLUMN run_policy     jsonb NOT NULL DEFAULT '{}'::jsonb
    CHECK (jsonb_typeof(run_policy) = 'object'),
  ADD CHECK ((paused_at IS NULL) = (paused_reason IS NULL));

-- The task page reads the ledger by task.
CREATE INDEX agent_calls_task ON agent_calls (tenant_id, task_id);

CREATE TABLE tool_approvals (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  task_id      uuid NOT NULL,
  agent_id     uuid NOT NULL,
  tool         text NOT NULL CHECK (length(tool) BETWEEN 1 AND 200),
  arguments    jsonb NOT NULL DEFAULT '{}'::jsonb
               CHECK (jsonb_typeof(arguments) = 'object' AND octet_length(arguments::text) <= 100000),
  call_id      text NOT NULL DEFAULT '' CHECK (length(call_id) <= 200),
  status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied')),
  comment      text NOT NULL DEFAULT '' CHECK (length(comment) <= 2000),
  requested_at timestamptz NOT NULL DEFAULT now(),
  decided_at   timestamptz,
  decided_by   text CHECK (length(decided_by) <= 200),
  -- composite keys: the task and the agent are always of the same tenant
  FOREIGN KEY (tenant_id, task_id) REFERENCES tasks (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id),
  CHECK ((status = 'pending') = (decided_at IS NULL))
);
-- At most one pending approval per task: a paused run waits for one decision at a time.
CREATE UNIQUE INDEX tool_approvals_one_pending ON tool_approvals (task_id)
  WHERE status = 'pending';
CREATE INDEX tool_approvals_task ON tool_approvals (tenant_id, task_id, requested_at);
CREATE INDEX tool_approvals_inbox ON tool_approvals (tenant_id, requested_at)
  WHERE status = 'pending';

-- A decision is final: the audit of who allowed what cannot be rewritten.
CREATE FUNCTION tool_approvals_before_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status <> 'pending' THEN
    RAISE EXCEPTION 'approval % was already decided (%)', OLD.id, OLD.status
      USING ERRCODE = 'check_violation';
  END IF;
  IF (NEW.tenant_id, NEW.task_id, NEW.agent_id, NEW.tool, NEW.arguments, NEW.call_id,
      NEW.requested_at) IS DISTINCT FROM (OLD.tenant_id, OLD.task_id, OLD.agent_id, OLD.tool,
      OLD.arguments, OLD.call_id, OLD.requested_at) THEN
    RAISE EXCEPTION 'only the decision of an approval may change'
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER tool_approvals_before_update BEFORE UPDATE ON tool_approvals
  FOR EACH ROW EXECUTE FUNCTION tool_approvals_before_update();

ALTER TABLE tool_approvals ENABLE ROW LEVEL SECURITY;
ALTER TABLE tool_approvals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tool_approvals
  USING (tenant_id = current_setting('app.tenant_id')::uuid)
  WITH CHECK (tenant_id = current_setting('app.tenant_id')::uuid);
GRANT SELECT, INSERT, UPDATE ON tool_approvals TO vos_app;

-- The status machine (Python twin: app/dispatch/status.py, TRANSITIONS + ENGINE_TRANSITIONS):
-- Draft -> Active -> Review -> Approved, Review -> Rejected -> Active,
-- Active -> Failed -> Active (retry), Active -> Draft (engine, with a reason in last_error),
-- Active -> Waiting -> Active (engine: delegated, then every child settled),
-- Active -> Paused (engine, with paused_reason) -> Active (operator: resume or decision),
-- Draft/Active/Waiting/Paused/Review/Rejected/Failed -> Cancelled (final).
CREATE OR REPLACE FUNCTION task_status_allowed(old task_status, new task_status)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN (old::text, new::text) IN (
    ('Draft', 'Active'), ('Active', 'Review'), ('Review', 'Approved'),
    ('Review', 'Rejected'), ('Rejected', 'Active'), ('Active', 'Failed'),
    ('Failed', 'Active'), ('Active', 'Draft'),
    ('Active', 'Waiting'), ('Waiting', 'Active'), ('Active', 'Paused'), ('Paused', 'Active'),
    ('Draft', 'Cancelled'), ('Active', 'Cancelled'), ('Waiting', 'Cancelled'),
    ('Paused', 'Cancelled'), ('Review', 'Cancelled'), ('Rejected', 'Cancelled'),
    ('Failed', 'Cancelled'));
END
$$;

CREATE OR REPLACE FUNCTION tasks_before_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.status::text NOT IN ('Draft', 'Active') THEN
      RAISE EXCEPTION 'a new task starts as Draft or Active, not %', NEW.status
        USING ERRCODE = 'check_violation';
    END IF;
    -- The depth is the tree's, never the caller's: parent's + 1 (a parent of another tenant
    -- is invisible here and then refused by the composite foreign key).
    IF NEW.parent_id IS NULL THEN
      NEW.depth := 0;
    ELSE
      SELECT p.depth + 1 INTO NEW.depth FROM tasks p
       WHERE p.id = NEW.parent_id AND p.tenant_id = NEW.tenant_id;
      IF NOT FOUND THEN
        NEW.depth := 1;  -- the foreign key names the missing parent
      ELSIF NEW.depth > 5 THEN
        RAISE EXCEPTION 'a task can be delegated at most 5 levels deep (this would be level %)',
          NEW.depth USING ERRCODE = 'check_violation';
      END IF;
    END IF;
    NEW.paused_reason := NULL;
    NEW.paused_at := NULL;
    RETURN NEW;
  END IF;
  IF NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
    RAISE EXCEPTION 'a task cannot move to another tenant' USING ERRCODE = 'check_violation';
  END IF;
  IF NEW.parent_id IS DISTINCT FROM OLD.parent_id OR NEW.depth IS DISTINCT FROM OLD.depth THEN
    RAISE EXCEPTION 'a task keeps the parent it was delegated from'
      USING ERRCODE = 'check_violation';
  END IF;
  IF NEW.status IS DISTINCT FROM OLD.status THEN
    IF NOT task_status_allowed(OLD.status, NEW.status) THEN
      RAISE EXCEPTION 'task status cannot move from % to %', OLD.status, NEW.status
        USING ERRCODE = 'check_violation',
              HINT = 'allowed: Draft->Active->Review->Approved, Review->Rejected->Active, '
                     'Active->Failed->Active, Active->Waiting->Active, Active->Paused->Active, '
                     'any open status->Cancelled';
    END IF;
    IF OLD.status::text = 'Active' AND NEW.status::text = 'Draft'
       AND (NEW.last_error IS NULL OR NEW.last_error IS NOT DISTINCT FROM OLD.last_error) THEN
      RAISE EXCEPTION 'task status cannot move from Active to Draft without a reason'
        USING ERRCODE = 'check_violation',
              HINT = 'only the worker sends a task back to Draft, with the reason in last_error';
    END IF;
    IF NEW.status::text = 'Paused' AND coalesce(btrim(NEW.paused_reason), '') = '' THEN
      RAISE EXCEPTION 'task status cannot move from % to Paused without a reason', OLD.status
        USING ERRCODE = 'check_violation',
              HINT = 'the engine pauses a run with the reason in paused_reason';
    END IF;
    IF NEW.status::text = 'Paused' THEN
      NEW.paused_at := now();
    END IF;
    -- A retry, and a rework after a rejection, start afresh: whoever makes the move (API, UI,
    -- SQL) resets the attempt count.
    IF OLD.status::text IN ('Failed', 'Rejected') AND NEW.status::text = 'Active' THEN
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
  -- Only an Active task is worked, so only it holds a claim (a Waiting, Paused or Cancelled
  -- task is never claimed, and a worker still running it loses the claim); only a Paused one
  -- has a pause reason.
  IF NEW.status::text <> 'Active' THEN
    NEW.claimed_by := NULL;
    NEW.lease_until := NULL;
  END IF;
  IF NEW.status::text <> 'Paused' THEN
    NEW.paused_reason := NULL;
    NEW.paused_at := NULL;
  END IF;
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

-- As in 0301, plus: run_state (the run's conversation, saved at every step) is not news.
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
   WHERE n.value IS DISTINCT FROM o.value AND n.key NOT IN ('updated_at', 'run_state');
  IF changes IS NULL OR (changes - 'lease_until') = '{}'::jsonb THEN
    RETURN NULL;  -- nothing changed (or only the lease or the run state): nothing to say
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
