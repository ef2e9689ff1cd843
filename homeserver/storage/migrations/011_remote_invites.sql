-- Invites of our users to rooms this server does not (yet) hold: the invite event, countersigned by us,
-- and the stripped state the inviting server sent, shown in /sync until the user joins or rejects.
CREATE TABLE remote_invites (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_json TEXT NOT NULL,
    invite_state TEXT NOT NULL,
    -- 'invite', or 'knock' for our user's knock on a room another server holds.
    membership TEXT NOT NULL DEFAULT 'invite',
    -- Position on the events stream, so incremental syncs pick the invite up.
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
