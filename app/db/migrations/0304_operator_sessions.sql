-- Command Center sign-in sessions (issue #14): the browser's cookie holds only a random
-- session id, never the operator token. Only its SHA-256 is stored here.
--
-- The cookie reads `<tenant uuid, 32 hex>.<43 random URL-safe characters>` (32 random
-- bytes). The UI opens a tenant_transaction for the tenant part and looks the SHA-256 of the
-- whole value up, so row-level security decides: a forged tenant part finds nothing.
-- A session is valid while: not ended (sign-out sets ended_at), not past expires_at
-- (absolute, 7 days), seen within the idle limit (12 h, checked against last_seen_at by
-- app/ui/auth.py), and its operator token is not revoked (the lookup joins
-- operator_tokens.revoked_at, so revoking a token ends its sessions at the next request).
CREATE TABLE operator_sessions (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id      uuid NOT NULL REFERENCES tenants (id),
  token_id       uuid NOT NULL REFERENCES operator_tokens (id),
  session_sha256 bytea NOT NULL UNIQUE CHECK (length(session_sha256) = 32),
  created_at     timestamptz NOT NULL DEFAULT now(),
  last_seen_at   timestamptz NOT NULL DEFAULT now(),
  expires_at     timestamptz NOT NULL,
  ended_at       timestamptz,
  CHECK (expires_at > created_at)
);
CREATE INDEX operator_sessions_token ON operator_sessions (token_id) WHERE ended_at IS NULL;

ALTER TABLE operator_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE operator_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON operator_sessions
  USING (tenant_id = current_setting('app.tenant_id')::uuid)
  WITH CHECK (tenant_id = current_setting('app.tenant_id')::uuid);

-- The UI starts sessions, reads them, stamps their use and ends them; nothing else. It can
-- neither extend a session (expires_at is not updatable) nor delete one.
GRANT SELECT ON operator_sessions TO vos_app;
GRANT INSERT (tenant_id, token_id, session_sha256, expires_at) ON operator_sessions TO vos_app;
GRANT UPDATE (last_seen_at, ended_at) ON operator_sessions TO vos_app;
