-- Accounts, devices, tokens, registration tokens and user-interactive auth sessions.
-- Flags are SMALLINT 0/1 so the same SQL and the same values work on SQLite and PostgreSQL.

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    admin SMALLINT NOT NULL DEFAULT 0,
    deactivated SMALLINT NOT NULL DEFAULT 0,
    locked SMALLINT NOT NULL DEFAULT 0,
    shadow_banned SMALLINT NOT NULL DEFAULT 0,
    erased SMALLINT NOT NULL DEFAULT 0,
    user_type TEXT,
    appservice_id TEXT,
    creation_ts BIGINT NOT NULL
);
CREATE INDEX users_creation_ts ON users (creation_ts);

-- Profile fields (displayname, avatar_url and custom keys); value is JSON text.
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);

CREATE TABLE devices (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ts BIGINT NOT NULL,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    last_seen_user_agent TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 hex digests only: a stolen database does not give working tokens.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expiry_ts BIGINT,
    -- Set once the token has been exchanged; the successor is kept so a retried /refresh is answered.
    next_token_hash TEXT
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    valid_until_ts BIGINT,
    refresh_token_hash TEXT,
    -- Admin "login as" tokens: the admin who holds it (audit trail).
    puppeted_by TEXT
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed INTEGER,
    pending INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_time BIGINT,
    created_ts BIGINT NOT NULL
);

CREATE TABLE uia_sessions (
    session_id TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL,
    method TEXT NOT NULL,
    uri TEXT NOT NULL,
    -- JSON of the first request body minus secrets (auth, passwords), so later steps may omit it.
    clientdict TEXT NOT NULL DEFAULT '{}',
    -- JSON: per-session values such as the registration token used.
    params TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE uia_completed (
    session_id TEXT NOT NULL REFERENCES uia_sessions (session_id) ON DELETE CASCADE,
    stage_type TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (session_id, stage_type)
);
