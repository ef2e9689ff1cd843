-- Full-text search over message bodies, room names and topics (SQLite FTS5).
CREATE VIRTUAL TABLE event_search USING fts5(
    value,
    event_id UNINDEXED,
    room_id UNINDEXED,
    key UNINDEXED,
    stream_ordering UNINDEXED,
    origin_server_ts UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2'
);
