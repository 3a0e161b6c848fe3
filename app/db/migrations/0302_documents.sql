-- Documents as code (`vos docs add|list|remove`, POST /documents, /ui/documents).
-- A document is keyed by (tenant, source): re-adding the same source with the same content
-- (sha256) changes nothing; new content replaces its passages in one transaction and keeps
-- the document's id. Rows added before this migration (source '' from add_document) keep
-- working: the key applies to non-empty sources only.
-- content_type: how the text was extracted ('markdown' and 'text' as given, 'html' through
--   the stdlib parser without script/style).
-- sha256 / size_bytes: of the bytes as received (NULL sha256: added before this migration).
ALTER TABLE documents
  ADD COLUMN content_type text NOT NULL DEFAULT 'text'
    CHECK (content_type IN ('markdown', 'text', 'html')),
  ADD COLUMN sha256 text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  ADD COLUMN size_bytes bigint NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
  ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

CREATE UNIQUE INDEX documents_tenant_source ON documents (tenant_id, source)
  WHERE source <> '';

-- Replacing a changed document updates its row in place (same id); the key columns stay.
GRANT UPDATE (title, content_type, sha256, size_bytes, tokens, updated_at) ON documents
  TO vos_app;

-- `--tenant SLUG` for commands that connect as vos_app (`vos docs …`, `vos agents …`): the
-- tenants policy shows vos_app only the row of the tenant already set, so a slug cannot be
-- looked up with a SELECT. This returns the id of one slug (NULL if none) and nothing else:
-- no listing. It grants no access: every tenant row is still behind its policy.
CREATE OR REPLACE FUNCTION tenant_id_for_slug(p_slug text) RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  RETURN (SELECT id FROM tenants WHERE slug = p_slug);
END
$$;
REVOKE ALL ON FUNCTION tenant_id_for_slug(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_id_for_slug(text) TO vos_app;
