-- What each application service still has to receive, in order. Rows go when the appservice has
-- accepted the transaction that carried them, so neither its outage nor a restart here loses any.
INSERT INTO id_sequences (name, last_value) VALUES ('appservice_queue', 0);

CREATE TABLE appservice_queue (
    seq BIGINT PRIMARY KEY,
    as_id TEXT NOT NULL,
    -- 'event', 'ephemeral' or 'to_device'
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX appservice_queue_as ON appservice_queue (as_id, seq);

-- The transaction being delivered (retried with the same ID and contents until accepted).
CREATE TABLE appservice_txns (
    as_id TEXT PRIMARY KEY,
    last_txn_id BIGINT NOT NULL,
    pending_txn_id BIGINT,
    pending_upto BIGINT
);
