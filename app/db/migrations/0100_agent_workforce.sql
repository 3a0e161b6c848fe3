-- The agent workforce (app/agents): versioned price table, the per-attempt cost ledger,
-- per-agent spend with budget reservations, and documents split into searchable passages.
-- Every table is tenant-scoped with ENABLE + FORCE row-level security and explicit grants.

-- Prices are append-only versions: a new price is a new row with a later effective_from.
CREATE TABLE model_prices (
  id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id            uuid NOT NULL REFERENCES tenants (id),
  provider             text NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_-]{0,40}$'),
  model                text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
  effective_from       timestamptz NOT NULL,
  version              text NOT NULL CHECK (length(version) BETWEEN 1 AND 100),
  input_per_mtok       numeric(12, 6) NOT NULL CHECK (input_per_mtok >= 0),
  output_per_mtok      numeric(12, 6) NOT NULL CHECK (output_per_mtok >= 0),
  cache_read_per_mtok  numeric(12, 6) NOT NULL CHECK (cache_read_per_mtok >= 0),
  cache_write_per_mtok numeric(12, 6) NOT NULL CHECK (cache_write_per_mtok >= 0),
  created_at           timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, provider, model, effective_from)
);

-- One row per provider attempt, failed or not (append-only).
CREATE TABLE agent_calls (
  id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id             uuid NOT NULL REFERENCES tenants (id),
  call_id               uuid NOT NULL,
  attempt_no            integer NOT NULL CHECK (attempt_no >= 1),
  agent_id              uuid NOT NULL,
  task_id               uuid,  -- no FK: the ledger outlives a deleted task
  provider              text NOT NULL,
  deployment            text NOT NULL,
  model_requested       text NOT NULL,
  model_served          text,
  uncached_input_tokens integer NOT NULL DEFAULT 0 CHECK (uncached_input_tokens >= 0),
  cache_read_tokens     integer NOT NULL DEFAULT 0 CHECK (cache_read_tokens >= 0),
  cache_write_tokens    integer NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0),
  output_tokens         integer NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
  latency_ms            integer NOT NULL DEFAULT 0 CHECK (latency_ms >= 0),
  outcome               text NOT NULL CHECK (outcome IN (
                          'ok', 'rate_limited', 'server', 'overloaded', 'connection',
                          'context_length', 'auth', 'bad_request', 'budget_denied')),
  next_action           text CHECK (next_action IN (
                          'retry', 'cooldown', 'larger_context', 'stop')),
  http_status           integer,
  error                 text CHECK (length(error) <= 1000),
  price_id              bigint REFERENCES model_prices (id),
  cost_usd              numeric(14, 8) NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
  started_at            timestamptz NOT NULL DEFAULT now(),
  created_at            timestamptz NOT NULL DEFAULT now(),
  UNIQUE (call_id, attempt_no),
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);
CREATE INDEX agent_calls_recent ON agent_calls (tenant_id, created_at);
CREATE INDEX agent_calls_agent ON agent_calls (tenant_id, agent_id, created_at);

-- Spent and reserved money per agent. The budget itself is agents.budget_usd; a call may
-- start only if spent + reserved + its worst-case estimate fits, checked under this row's
-- lock in the transaction that adds the reservation.
CREATE TABLE agent_spend (
  agent_id     uuid PRIMARY KEY,
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  spent_usd    numeric(14, 8) NOT NULL DEFAULT 0 CHECK (spent_usd >= 0),
  reserved_usd numeric(14, 8) NOT NULL DEFAULT 0 CHECK (reserved_usd >= 0),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);

CREATE TABLE budget_reservations (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id     uuid NOT NULL REFERENCES tenants (id),
  agent_id      uuid NOT NULL,
  call_id       uuid NOT NULL,
  estimated_usd numeric(14, 8) NOT NULL CHECK (estimated_usd >= 0),
  actual_usd    numeric(14, 8) CHECK (actual_usd >= 0),
  status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'settled')),
  created_at    timestamptz NOT NULL DEFAULT now(),
  settled_at    timestamptz,
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id),
  CHECK ((status = 'settled') = (settled_at IS NOT NULL))
);
CREATE INDEX budget_reservations_open ON budget_reservations (tenant_id, agent_id)
  WHERE status = 'open';

-- Documents are split into passages; a call reads the best passages, never a whole document.
CREATE TABLE documents (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id  uuid NOT NULL REFERENCES tenants (id),
  title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
  source     text NOT NULL DEFAULT '',
  tokens     integer NOT NULL CHECK (tokens >= 0),
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id)
);

CREATE TABLE passages (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id   uuid NOT NULL REFERENCES tenants (id),
  document_id uuid NOT NULL,
  ordinal     integer NOT NULL CHECK (ordinal >= 0),
  body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 20000),
  tokens      integer NOT NULL CHECK (tokens >= 0),
  tsv         tsvector GENERATED ALWAYS AS (to_tsvector('english', body)) STORED,
  UNIQUE (document_id, ordinal),
  FOREIGN KEY (tenant_id, document_id) REFERENCES documents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX passages_tsv ON passages USING GIN (tsv);

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['model_prices', 'agent_calls', 'agent_spend',
                           'budget_reservations', 'documents', 'passages'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format(
      'CREATE POLICY tenant_isolation ON %I '
      'USING (tenant_id = current_setting(''app.tenant_id'')::uuid) '
      'WITH CHECK (tenant_id = current_setting(''app.tenant_id'')::uuid)', t);
  END LOOP;
END
$$;

GRANT SELECT, INSERT ON model_prices, agent_calls TO vos_app;
GRANT SELECT, INSERT, UPDATE ON agent_spend, budget_reservations TO vos_app;
GRANT SELECT, INSERT, DELETE ON documents, passages TO vos_app;

-- Command Center views. security_invoker makes them obey the caller's row-level security
-- (a plain view would run as its owner and show every tenant's rows).
CREATE VIEW agent_cost_today WITH (security_invoker = true) AS
  SELECT tenant_id,
         count(DISTINCT call_id) FILTER (WHERE outcome = 'ok') AS calls,
         count(*) AS attempts,
         count(*) FILTER (WHERE outcome NOT IN ('ok', 'budget_denied')) AS failed_attempts,
         sum(cost_usd) AS cost_usd,
         sum(uncached_input_tokens) AS uncached_input_tokens,
         sum(cache_read_tokens) AS cache_read_tokens,
         sum(cache_write_tokens) AS cache_write_tokens,
         sum(output_tokens) AS output_tokens
    FROM agent_calls
   WHERE created_at >= date_trunc('day', now())
   GROUP BY tenant_id;

CREATE VIEW agent_cost_this_week WITH (security_invoker = true) AS
  SELECT tenant_id,
         count(DISTINCT call_id) FILTER (WHERE outcome = 'ok') AS calls,
         count(*) AS attempts,
         sum(cost_usd) AS cost_usd,
         sum(uncached_input_tokens + cache_read_tokens + cache_write_tokens) AS input_tokens,
         sum(output_tokens) AS output_tokens
    FROM agent_calls
   WHERE created_at >= date_trunc('week', now())
   GROUP BY tenant_id;

-- A "call" is one logical request: all its attempts (retries, fallbacks) together.
CREATE VIEW agent_cost_per_call WITH (security_invoker = true) AS
  SELECT tenant_id,
         count(*) AS calls,
         avg(cost_usd) AS avg_cost_usd,
         avg(input_tokens) AS avg_input_tokens,
         avg(attempts) AS avg_attempts
    FROM (SELECT tenant_id, call_id, sum(cost_usd) AS cost_usd, count(*) AS attempts,
                 sum(uncached_input_tokens + cache_read_tokens + cache_write_tokens)
                   AS input_tokens
            FROM agent_calls
           WHERE outcome <> 'budget_denied'
           GROUP BY tenant_id, call_id) per_call
   GROUP BY tenant_id;

CREATE VIEW agent_cost_by_model WITH (security_invoker = true) AS
  SELECT tenant_id, provider, model_requested,
         array_agg(DISTINCT model_served) FILTER (WHERE model_served IS NOT NULL)
           AS models_served,
         count(*) FILTER (WHERE outcome = 'ok') AS ok_attempts,
         count(*) AS attempts,
         sum(cost_usd) AS cost_usd,
         sum(uncached_input_tokens) AS uncached_input_tokens,
         sum(cache_read_tokens) AS cache_read_tokens,
         sum(cache_write_tokens) AS cache_write_tokens,
         sum(output_tokens) AS output_tokens
    FROM agent_calls
   GROUP BY tenant_id, provider, model_requested;

CREATE VIEW agent_cost_by_agent WITH (security_invoker = true) AS
  SELECT c.tenant_id, c.agent_id, a.name AS agent_name,
         count(DISTINCT c.call_id) FILTER (WHERE c.outcome = 'ok') AS calls,
         sum(c.cost_usd) AS cost_usd,
         sum(c.cost_usd) FILTER (WHERE c.created_at >= date_trunc('day', now())) AS cost_today,
         max(a.budget_usd) AS budget_usd,
         max(s.spent_usd) AS spent_usd
    FROM agent_calls c
    JOIN agents a ON a.id = c.agent_id
    LEFT JOIN agent_spend s ON s.agent_id = c.agent_id
   GROUP BY c.tenant_id, c.agent_id, a.name;

GRANT SELECT ON agent_cost_today, agent_cost_this_week, agent_cost_per_call,
                agent_cost_by_model, agent_cost_by_agent TO vos_app;
