-- Retrieval that generalises (issue #15): passages carry their section's heading path and
-- their document's title, the full-text vector weights them (title A, headings B, body D),
-- and each passage holds a dense embedding for hybrid ranking (app/agents/retrieval.py).
--
-- heading: the section's heading path, "Fares › Concessions" ('' before the first heading).
-- title: the document's title, copied so the generated tsvector can weight it (a generated
--   column cannot read another table); passages are rewritten whenever a document changes.
-- embedding_model: which model made `embedding` ("wordllama/l2_supercat-256",
--   "ollama/nomic-embed-text", …); passages from another model are re-embedded on use.
-- embedding: pgvector `vector` where the server offers the extension (managed providers,
--   Debian 13's postgresql-17-pgvector), else a plain float4[] (Debian 12 / PG 15 here);
--   the code reads the column's type and ranks in SQL (pgvector) or in numpy (fallback).
ALTER TABLE passages
  ADD COLUMN heading text NOT NULL DEFAULT '' CHECK (length(heading) <= 2000),
  ADD COLUMN title text NOT NULL DEFAULT '' CHECK (length(title) <= 500),
  ADD COLUMN embedding_model text;

UPDATE passages p SET title = d.title FROM documents d WHERE d.id = p.document_id;

DROP INDEX passages_tsv;
ALTER TABLE passages DROP COLUMN tsv;
ALTER TABLE passages ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
  setweight(to_tsvector('english', title), 'A')
  || setweight(to_tsvector('english', heading), 'B')
  || setweight(to_tsvector('english', body), 'D')) STORED;
CREATE INDEX passages_tsv ON passages USING GIN (tsv);

DO $$
DECLARE
  has_vector boolean := false;
BEGIN
  IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
    BEGIN
      CREATE EXTENSION IF NOT EXISTS vector;
      has_vector := true;
    EXCEPTION WHEN insufficient_privilege OR feature_not_supported THEN
      -- Offered by the server but not creatable by this owner: the fallback still works.
      RAISE NOTICE 'vector extension not creatable (%); using real[] embeddings', SQLERRM;
    END;
  END IF;
  IF has_vector THEN
    -- No typmod: the dimension depends on the embedding model the tenant configured.
    EXECUTE 'ALTER TABLE passages ADD COLUMN embedding vector';
  ELSE
    ALTER TABLE passages ADD COLUMN embedding real[];
  END IF;
END
$$;

-- The corpus version of each tenant: bumped by every statement that inserts, updates or
-- deletes its passages. Retrieval keys its per-process caches (inverted index, vectors) by
-- it, so each query reads one row instead of counting the tenant's passages. Concurrent
-- writers of one tenant's passages queue on this row until commit.
CREATE TABLE passage_versions (
  tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
  version   bigint NOT NULL DEFAULT 0
);
ALTER TABLE passage_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE passage_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON passage_versions
  USING (tenant_id = current_setting('app.tenant_id')::uuid)
  WITH CHECK (tenant_id = current_setting('app.tenant_id')::uuid);
GRANT SELECT, INSERT, UPDATE ON passage_versions TO vos_app;

CREATE FUNCTION bump_passage_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO passage_versions AS v (tenant_id, version)
  SELECT tenant_id, 1 FROM changed GROUP BY tenant_id
  ON CONFLICT (tenant_id) DO UPDATE SET version = v.version + 1;
  RETURN NULL;
END
$$;
CREATE TRIGGER passages_version_insert AFTER INSERT ON passages
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION bump_passage_version();
CREATE TRIGGER passages_version_update AFTER UPDATE ON passages
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION bump_passage_version();
CREATE TRIGGER passages_version_delete AFTER DELETE ON passages
  REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION bump_passage_version();

-- Re-embedding after a model change updates these two columns in place.
GRANT UPDATE (embedding, embedding_model) ON passages TO vos_app;
