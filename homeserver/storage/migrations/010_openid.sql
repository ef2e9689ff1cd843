-- OpenID tokens a user hands to a third party (a widget, an integration, a call service) so that it can
-- ask this server who the user is. Stored as SHA-256 hashes, like access tokens.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
