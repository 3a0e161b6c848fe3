-- The app's login role and the tenant registry.
--
-- `vos_app` is what the API, the door and the workers connect as: it owns nothing, is not a
-- superuser and has NOBYPASSRLS, so every row it sees passes a row-level security policy.
-- Its password is set by `vos db migrate --app-password-env VAR` (never in a migration).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vos_app') THEN
    CREATE ROLE vos_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOBYPASSRLS;
  END IF;
END
$$;
-- Re-assert the attributes in case someone loosened them by hand.
ALTER ROLE vos_app NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOBYPASSRLS;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO vos_app;

CREATE TABLE tenants (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  created_at timestamptz NOT NULL DEFAULT now()
);

-- A tenant sees its own row only. Tenants are created by the owner (`vos tenant create`).
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
  USING (id = current_setting('app.tenant_id')::uuid)
  WITH CHECK (id = current_setting('app.tenant_id')::uuid);
GRANT SELECT ON tenants TO vos_app;
