-- What this server still has to deliver to other servers: PDUs and the EDUs that must not be lost
-- (to-device messages, device-list updates). Rows go when the destination has accepted them, so a
-- peer that was down, or a restart of this server, loses nothing.
INSERT INTO id_sequences (name, last_value) VALUES ('federation_outbox', 0);

CREATE TABLE federation_outbox (
    seq BIGINT PRIMARY KEY,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX federation_outbox_destination ON federation_outbox (destination, seq);
