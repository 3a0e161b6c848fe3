-- Command Center operator accounts: one row per operator token of a tenant.
--
-- A token reads `vost_<tenant uuid, 32 hex>_<secret>`. The UI takes the tenant from the
-- token, opens a tenant_transaction for it and looks up the SHA-256 of the whole token, so
-- row-level security decides whether it is valid: a forged tenant part finds nothing. Only
-- the hash is stored; the token is shown once, by `vos operator create`.
CREATE TABLE operator_tokens (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  name         text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,99}$'),
  token_sha256 bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  revoked_at   timestamptz
);
CREATE INDEX operator_tokens_tenant ON operator_tokens (tenant_id, name);

ALTER TABLE operator_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE operator_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON operator_tokens
  USING (tenant_id = current_setting('app.tenant_id')::uuid)
  WITH CHECK (tenant_id = current_setting('app.tenant_id')::uuid);

-- The UI reads tokens and stamps their use; creating and revoking them is an owner operation.
GRANT SELECT ON operator_tokens TO vos_app;
GRANT UPDATE (last_used_at) ON operator_tokens TO vos_app;

-- The duty board reads, per status column, the most urgent tasks first and counts the rest.
CREATE INDEX tasks_board ON tasks (tenant_id, status, priority, created_at DESC);
