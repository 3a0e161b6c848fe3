-- The door's fast path (issue #19): one accepted callback = one round trip. Before, the door
-- spent six round trips per callback (pool check, BEGIN, source lookup, callback insert, task
-- insert, COMMIT), each a thread hand-off in the app. door_accept() does the whole
-- transaction server-side, called as one autocommit statement:
--   1. the source's tenant from door_sources (not bound: 'not_bound', nothing written);
--   2. SET LOCAL app.tenant_id / app.actor for this statement's transaction, so row-level
--      security confines every write below exactly as tenant_transaction() did;
--   3. the callback ON CONFLICT (source, webhook_id) DO NOTHING (a replay: 'duplicate');
--   4. a new task (its `created` event and NOTIFY come from the tasks/task_events triggers),
--      or an event on an existing task of that tenant: an unknown task raises no_data_found,
--      which rolls back the callback too (the door answers 422 unknown_task).
-- SECURITY INVOKER on purpose: it runs as vos_app, so RLS and the GRANTs still apply; it can
-- do nothing the door could not do with plain statements.
--
-- Example (as vos_app, autocommit):
--   SELECT door_accept('edge', 'msg_1', now(), '{"type": "task.create", "title": "x"}',
--                      gen_random_uuid(), 'x', '', 'P1', false, NULL);   -- 'accepted'
CREATE FUNCTION door_accept(
  p_source     text,
  p_webhook_id text,
  p_sent_at    timestamptz,
  p_payload    text,         -- the raw signed body; Postgres parses it (exactly what was signed)
  p_task_id    uuid,         -- the new task's id, or the task an event is about
  p_title      text,         -- task.create only (else NULL)
  p_body       text,
  p_priority   text,
  p_draft      boolean,
  p_event_kind text          -- task.event only: the event is 'callback.<kind>'; NULL = create
) RETURNS text
LANGUAGE plpgsql SECURITY INVOKER AS $$
DECLARE
  v_tenant  uuid;
  v_payload jsonb;
  v_id      bigint;
BEGIN
  SELECT tenant_id INTO v_tenant FROM door_sources WHERE source = p_source;
  IF NOT FOUND THEN
    RETURN 'not_bound';
  END IF;
  PERFORM set_config('app.tenant_id', v_tenant::text, true),
          set_config('app.actor', 'door:' || p_source, true);
  v_payload := p_payload::jsonb;  -- after the lookup: an unbound source is refused first
  INSERT INTO callbacks (tenant_id, source, webhook_id, sent_at, payload, task_id)
  VALUES (v_tenant, p_source, p_webhook_id, p_sent_at, v_payload, p_task_id)
  ON CONFLICT (source, webhook_id) DO NOTHING
  RETURNING id INTO v_id;
  IF v_id IS NULL THEN
    RETURN 'duplicate';
  END IF;
  IF p_event_kind IS NULL THEN
    INSERT INTO tasks (id, tenant_id, title, body, priority, status)
    VALUES (p_task_id, v_tenant, p_title, p_body, p_priority::task_priority,
            CASE WHEN p_draft THEN 'Draft' ELSE 'Active' END::task_status);
  ELSE
    PERFORM 1 FROM tasks WHERE id = p_task_id;  -- RLS: only this tenant's tasks are visible
    IF NOT FOUND THEN
      RAISE EXCEPTION 'task_id is not a task of this source''s tenant'
        USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO task_events (tenant_id, task_id, kind, payload)
    VALUES (v_tenant, p_task_id, 'callback.' || p_event_kind, jsonb_build_object(
      'source', p_source, 'webhook_id', p_webhook_id,
      'data', coalesce(v_payload -> 'data', '{}'::jsonb)));
  END IF;
  RETURN 'accepted';
END
$$;
REVOKE ALL ON FUNCTION door_accept(text, text, timestamptz, text, uuid, text, text, text,
                                   boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION door_accept(text, text, timestamptz, text, uuid, text, text, text,
                                      boolean, text) TO vos_app;

-- Group commit (issue #19's profile): a transaction that NOTIFYs holds a database-wide lock
-- from before its commit record until after its fsync, so notifying transactions commit one
-- at a time, each waiting for its own flush (pgbench on this machine: 6,500 single-row
-- INSERT TPS, ~900 with a pg_notify in the same transaction). The door therefore writes the
-- callbacks that arrive together in ONE transaction: door_accept for each, in order, every
-- event still NOTIFYing in the transaction that writes it. Arrays of door_accept's arguments,
-- one element per callback; returns the outcomes in the same order. Any error aborts the
-- whole batch (nothing written); the door then replays that batch one door_accept at a time,
-- so each callback gets exactly the answer it would have had alone.
--
-- Example:
--   SELECT door_accept_batch(ARRAY['edge','edge'], ARRAY['msg_1','msg_2'], …);
--     -- {accepted,accepted}
CREATE FUNCTION door_accept_batch(
  p_sources text[], p_webhook_ids text[], p_sent_ats timestamptz[], p_payloads text[],
  p_task_ids uuid[], p_titles text[], p_bodies text[], p_priorities text[],
  p_drafts boolean[], p_event_kinds text[]
) RETURNS text[]
LANGUAGE plpgsql SECURITY INVOKER AS $$
DECLARE
  outcomes text[] := '{}';
BEGIN
  FOR i IN 1 .. coalesce(array_length(p_sources, 1), 0) LOOP
    outcomes := outcomes || door_accept(
      p_sources[i], p_webhook_ids[i], p_sent_ats[i], p_payloads[i], p_task_ids[i],
      p_titles[i], p_bodies[i], p_priorities[i], p_drafts[i], p_event_kinds[i]);
  END LOOP;
  RETURN outcomes;
END
$$;
REVOKE ALL ON FUNCTION door_accept_batch(text[], text[], timestamptz[], text[], uuid[], text[],
                                         text[], text[], boolean[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION door_accept_batch(text[], text[], timestamptz[], text[], uuid[],
                                            text[], text[], text[], boolean[], text[]) TO vos_app;
