-- Per-user data streamed to clients through /sync: account data (global and per room) and receipts.

INSERT INTO id_sequences (name, last_value) VALUES ('account_data', 0);
INSERT INTO id_sequences (name, last_value) VALUES ('receipts', 0);

-- room_id '' means global account data.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_id);

-- thread_id '' means an unthreaded receipt.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_stream ON receipts (room_id, stream_id);

-- Push rules a user has added (position orders them within their kind), and per-user switches and
-- actions for the server-default rules (rule_id starting with '.').
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    -- JSON: conditions / pattern / actions of a user rule; NULL for a server-default rule.
    rule TEXT,
    enabled SMALLINT NOT NULL DEFAULT 1,
    -- JSON actions overriding a server-default rule's actions; NULL keeps the default.
    actions TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- The outcome of evaluating each recipient's push rules when an event is persisted: what unread
-- counts and /notifications are computed from.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    highlight SMALLINT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_id, stream_ordering);
CREATE INDEX event_push_actions_user ON event_push_actions (user_id, stream_ordering);

-- Relations (m.relates_to) between events, for /relations, /threads and bundled aggregations.
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    sender TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL
);
CREATE INDEX event_relations_target ON event_relations (relates_to_id, rel_type, stream_ordering);
CREATE INDEX event_relations_room_threads ON event_relations (room_id, rel_type, stream_ordering);

-- Reports of events and rooms by users, for the ministry's moderators.
CREATE TABLE reports (
    id BIGINT PRIMARY KEY,
    received_ts BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT,
    user_id TEXT NOT NULL,
    reason TEXT,
    score INTEGER
);
INSERT INTO id_sequences (name, last_value) VALUES ('reports', 0);
