-- Rooms, events, the event graph and room state.
--
-- State is stored as snapshots: a snapshot is a delta (the entries that differ) against a parent
-- snapshot, with the chain length bounded so reading one never walks far. Storage therefore grows
-- with the number of state *changes*, not with members x events.

CREATE TABLE id_sequences (
    name TEXT PRIMARY KEY,
    last_value BIGINT NOT NULL
);
INSERT INTO id_sequences (name, last_value) VALUES ('events_stream', 0);
INSERT INTO id_sequences (name, last_value) VALUES ('backfill_stream', 0);
INSERT INTO id_sequences (name, last_value) VALUES ('state_snapshot', 0);

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT,
    created_ts BIGINT NOT NULL,
    -- Published in this server's room directory.
    is_public SMALLINT NOT NULL DEFAULT 0,
    -- The snapshot current_state materialises; new local events start from it.
    current_snapshot BIGINT
);

CREATE TABLE state_snapshots (
    snapshot_id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    parent_id BIGINT,
    chain_length INTEGER NOT NULL
);

-- event_id NULL records that the key is absent in this snapshot although present in the parent.
CREATE TABLE state_snapshot_entries (
    snapshot_id BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (snapshot_id, type, state_key)
);

-- Every event we hold, local or remote. stream_ordering is the position in the events stream
-- (negative for history fetched later by backfill, so live positions stay dense and increasing).
CREATE TABLE events (
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    depth BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    -- The event as signed (PDU form); redactions are applied when read, never to this column.
    json TEXT NOT NULL,
    -- Why the auth rules refused it; NULL when accepted.
    rejected TEXT,
    soft_failed SMALLINT NOT NULL DEFAULT 0,
    -- Outliers are held for their signatures/auth chains but are not part of the timeline.
    outlier SMALLINT NOT NULL DEFAULT 0,
    redacted_by TEXT,
    -- State after this event (for outliers: NULL).
    state_after BIGINT,
    -- For state events: the event this one replaced in the state (clients get its content as prev_content).
    replaces_state TEXT,
    -- For local echo: the sender's device and transaction ID.
    device_id TEXT,
    txn_id TEXT
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_depth ON events (room_id, depth, stream_ordering);
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);

CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth (
    event_id TEXT NOT NULL,
    auth_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_id)
);

CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- The materialised current state of each room, with membership copied out for fast lookups.
CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_members ON current_state (state_key, membership) ;

-- Idempotent sends: one event per (user, device, transaction ID).
CREATE TABLE event_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Rooms a user has left and asked to forget (POST /forget).
CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

-- Filters clients upload (POST /user/{userId}/filter) and refer to by ID in /sync.
CREATE TABLE user_filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
