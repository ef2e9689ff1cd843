-- Other servers' signing keys as fetched (directly or through a notary), with the signed response
-- they came in, so the audit export can hand auditors the servers' own signatures.
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    -- Until when the key may be used (current keys); NULL for an old key.
    valid_until_ts BIGINT,
    -- When it stopped being used (old_verify_keys); NULL for a current key.
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    -- Where it came from: 'direct', 'notary:<server>' or 'pinned'.
    source TEXT NOT NULL,
    response_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
