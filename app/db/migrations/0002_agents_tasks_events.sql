-- The dispatch engine: agents (the org chart), tasks (the status machine) and task_events
-- (append-only audit and live feed). Every change to a task writes a task_event through a
-- trigger, and every task_event raises NOTIFY task_events, both in the same transaction.

CREATE TABLE agents (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id         uuid NOT NULL REFERENCES tenants (id),
  name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  role              text NOT NULL DEFAULT '' CHECK (length(role) <= 200),
  persona           text NOT NULL DEFAULT '' CHECK (length(persona) <= 20000),
  manager_id        uuid,
  model_preferences jsonb NOT NULL DEFAULT '{}'::jsonb
                    CHECK (jsonb_typeof(model_preferences) = 'object'),
  budget_usd        numeric(12, 4) NOT NULL DEFAULT 0 CHECK (budget_usd >= 0),
  created_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  UNIQUE (tenant_id, name),
  CHECK (manager_id IS DISTINCT FROM id),
  -- Composite key: a manager is always in the same tenant (FK checks bypass RLS, so a plain
  -- FK on id alone would let one tenant point at another's agent).
  FOREIGN KEY (tenant_id, manager_id) REFERENCES agents (tenant_id, id)
);

CREATE TYPE task_status AS ENUM ('Draft', 'Active', 'Review', 'Approved', 'Rejected');
CREATE TYPE task_priority AS ENUM ('P0', 'P1', 'P2');

CREATE TABLE tasks (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL REFERENCES tenants (id),
  title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
  body        text NOT NULL DEFAULT '' CHECK (length(body) <= 100000),
  status      task_status NOT NULL DEFAULT 'Draft',
  priority    task_priority NOT NULL DEFAULT 'P1',
  assignee_id uuid,
  claimed_by  text,
  lease_until timestamptz,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, assignee_id) REFERENCES agents (tenant_id, id),
  CHECK ((claimed_by IS NULL) = (lease_until IS NULL))
);
-- The worker's queue scan: claimable work, most urgent and oldest first.
CREATE INDEX tasks_claimable ON tasks (tenant_id, priority, created_at)
  WHERE status = 'Active';

CREATE TABLE task_events (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id  uuid NOT NULL REFERENCES tenants (id),
  task_id    uuid,  -- no FK: the audit trail outlives a deleted task
  kind       text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.]{0,62}$'),
  payload    jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_events_task ON task_events (tenant_id, task_id, id);

-- The status machine, as a backstop under the Python one (app/dispatch/status.py):
-- Draft -> Active -> Review -> Approved, Review -> Rejected -> Active.
CREATE FUNCTION task_status_allowed(old task_status, new task_status) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT (old, new) IN (
    ('Draft'::task_status, 'Active'::task_status),
    ('Active', 'Review'), ('Review', 'Approved'), ('Review', 'Rejected'),
    ('Rejected', 'Active'))
$$;

CREATE FUNCTION tasks_before_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.status NOT IN ('Draft', 'Active') THEN
      RAISE EXCEPTION 'a new task starts as Draft or Active, not %', NEW.status
        USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
    RAISE EXCEPTION 'a task cannot move to another tenant' USING ERRCODE = 'check_violation';
  END IF;
  IF NEW.status IS DISTINCT FROM OLD.status
     AND NOT task_status_allowed(OLD.status, NEW.status) THEN
    RAISE EXCEPTION 'task status cannot move from % to %', OLD.status, NEW.status
      USING ERRCODE = 'check_violation',
            HINT = 'allowed: Draft->Active->Review->Approved, Review->Rejected->Active';
  END IF;
  NEW.updated_at := now();
  RETURN NEW;
END
$$;
CREATE TRIGGER tasks_before_write BEFORE INSERT OR UPDATE ON tasks
  FOR EACH ROW EXECUTE FUNCTION tasks_before_write();

-- Every change to a task becomes one task_event, in the same transaction. The actor comes
-- from `SET LOCAL app.actor` (tenant_transaction(..., actor=...)).
CREATE FUNCTION tasks_after_write() RETURNS trigger LANGUAGE plpgsql AS $$
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
  IF changes IS NULL THEN
    RETURN NULL;  -- nothing changed, nothing to say
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
CREATE TRIGGER tasks_after_write AFTER INSERT OR UPDATE OR DELETE ON tasks
  FOR EACH ROW EXECUTE FUNCTION tasks_after_write();

-- task_events is append-only, for the owner too.
CREATE FUNCTION task_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'task_events is append-only (% refused)', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER task_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON task_events
  FOR EACH STATEMENT EXECUTE FUNCTION task_events_append_only();

-- The live feed: a small payload (ids only). Listeners re-read the event inside a
-- tenant_transaction, so NOTIFY never carries tenant data past RLS.
CREATE FUNCTION task_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('task_events', json_build_object(
    'id', NEW.id, 'tenant_id', NEW.tenant_id, 'task_id', NEW.task_id, 'kind', NEW.kind)::text);
  RETURN NULL;
END
$$;
CREATE TRIGGER task_events_notify AFTER INSERT ON task_events
  FOR EACH ROW EXECUTE FUNCTION task_events_notify();

ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agents
  USING (tenant_id = current_setting('app.tenant_id')::uuid)
  WITH CHECK (tenant_id = current_setting('app.tenant_id')::uuid);

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tasks
  USING (tenant_id = current_setting('app.tenant_id')::uuid)
  WITH CHECK (tenant_id = current_setting('app.tenant_id')::uuid);

ALTER TABLE task_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE task_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON task_events
  USING (tenant_id = current_setting('app.tenant_id')::uuid)
  WITH CHECK (tenant_id = current_setting('app.tenant_id')::uuid);

GRANT SELECT, INSERT, UPDATE, DELETE ON agents, tasks TO vos_app;
GRANT SELECT, INSERT ON task_events TO vos_app;
