-- The door's idempotency is per source: a webhook-id is unique within the source that sent it,
-- not across every tenant. Before, another source's correctly signed message whose id
-- happened to collide was dropped as a "duplicate", and the answer told its sender that the
-- id existed somewhere else. The door inserts ON CONFLICT (source, webhook_id) DO NOTHING.
ALTER TABLE callbacks DROP CONSTRAINT callbacks_webhook_id_key;
ALTER TABLE callbacks ADD CONSTRAINT callbacks_source_webhook_id_key UNIQUE (source, webhook_id);
