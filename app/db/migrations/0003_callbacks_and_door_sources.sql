-- The door's inbox. One row per accepted webhook, unique on its webhook-id, so a replay or a
-- sender's retry is accepted exactly once.

-- Which tenant a door source feeds. Routing data only (no tenant content), read before the
-- tenant is known, so it has no RLS; the app may only read it. Written by the owner with
-- `vos door bind SOURCE --tenant SLUG`.
CREATE TABLE door_sources (
  source     text PRIMARY KEY CHECK (source ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  tenant_id  uuid NOT NULL REFERENCES tenants (id),
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE door_sources IS
  'rls-exempt: routing only (source -> tenant id), read by the door before the tenant is known';
GRANT SELECT ON door_sources TO vos_app;

CREATE TABLE callbacks (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id   uuid NOT NULL REFERENCES tenants (id),
  source      text NOT NULL,
  webhook_id  text NOT NULL UNIQUE CHECK (length(webhook_id) BETWEEN 1 AND 256),
  sent_at     timestamptz NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  payload     jsonb NOT NULL,
  task_id     uuid,
  -- Deferred: the door inserts the callback first (the dedupe point), then the task it names.
  FOREIGN KEY (tenant_id, task_id) REFERENCES tasks (tenant_id, id) ON DELETE SET NULL (task_id)
    DEFERRABLE INITIALLY DEFERRED
);

ALTER TABLE callbacks ENABLE ROW LEVEL SECURITY;
ALTER TABLE callbacks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON callbacks
  USING (tenant_id = current_setting('app.tenant_id')::uuid)
  WITH CHECK (tenant_id = current_setting('app.tenant_id')::uuid);
GRANT SELECT, INSERT ON callbacks TO vos_app;
