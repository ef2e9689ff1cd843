-- Pushers (client-server "Push notifications" module): where to send a user's notifications. One row
-- per (app_id, pushkey, user_id), as in Synapse. A pusher belongs to the device that set it and goes
-- when that device is logged out or deleted. last_stream_ordering is how far through the user's
-- event_push_actions this pusher has delivered, so delivery resumes after a restart and a new pusher
-- does not replay old notifications.
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    device_id TEXT,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    pushkey_ts BIGINT NOT NULL,
    last_stream_ordering BIGINT NOT NULL,
    last_success_ts BIGINT,
    failing_since_ts BIGINT,
    PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers (user_id);
