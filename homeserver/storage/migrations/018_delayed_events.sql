-- Delayed events (MSC4140): events a client has asked the server to send later, unless it cancels,
-- restarts or sends them first. Kept in the database so a restart neither loses nor repeats them.
CREATE TABLE delayed_events (
    delay_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT,
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,
    content TEXT NOT NULL,
    delay_ms BIGINT NOT NULL,
    send_ts BIGINT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX delayed_events_send_ts ON delayed_events (send_ts);
CREATE INDEX delayed_events_user ON delayed_events (user_id);
CREATE INDEX delayed_events_target ON delayed_events (room_id, event_type, state_key);
