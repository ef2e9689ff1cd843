-- Other servers' users' device lists and cross-signing keys, cached so /keys/query for them is answered
-- here (fast, and still answered while their server is unreachable). Only users who share a room with
-- one of our users are cached: only then does their server send us m.device_list_update EDUs, which
-- keep the cache current (homeserver/services/remote_devices.py).

-- One row per cached remote user. stream_id is the position in the user's server's device-list stream
-- that the cache reflects (the highest EDU stream_id seen); prev_id in the next EDU must name it, or the
-- cache is stale. stale = 1: answer from here only if the user's server cannot be reached. fetched_ts:
-- the last full fetch (GET /user/devices). The cross-signing keys are the signed JSON objects, or NULL.
CREATE TABLE remote_device_lists (
    user_id TEXT NOT NULL PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    stale SMALLINT NOT NULL DEFAULT 0,
    fetched_ts BIGINT NOT NULL,
    master_key_json TEXT,
    self_signing_key_json TEXT
);

-- The cached user's devices that have identity keys: the signed device_keys object and the display
-- name the user's server published (if any).
CREATE TABLE remote_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    keys_json TEXT NOT NULL,
    display_name TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Our own users' changes: whether a change is announced to other servers as an m.device_list_update
-- (1), or not (0: cross-signing changes go out as m.signing_key_update; signatures only the signer
-- sees are not sent at all). The stream_id/prev_id chain of our outbound EDUs, and the stream_id our
-- GET /user/devices answers, follow the announced changes only, so receivers can apply each EDU
-- without a resync, and the chain survives a restart (it is read from here, not kept in memory).
ALTER TABLE device_list_changes ADD COLUMN federated SMALLINT NOT NULL DEFAULT 1;
