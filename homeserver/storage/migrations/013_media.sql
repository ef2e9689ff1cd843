-- The media repository. Files live on disk named by their SHA-256 (identical uploads share one file);
-- these rows say which media ID is which file, who uploaded it and how it may be served.
CREATE TABLE local_media (
    media_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    content_type TEXT,
    upload_name TEXT,
    -- NULL until the content is uploaded (an ID reserved with /create and not yet filled).
    size BIGINT,
    sha256 TEXT,
    created_ts BIGINT NOT NULL,
    -- For IDs reserved with /create: when the reservation lapses if nothing is uploaded.
    unused_expires_ts BIGINT,
    quarantined_by TEXT,
    last_access_ts BIGINT
);
CREATE INDEX local_media_user ON local_media (user_id, created_ts);
CREATE INDEX local_media_sha256 ON local_media (sha256);

-- Other servers' media fetched over federation and kept here.
CREATE TABLE remote_media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    quarantined_by TEXT,
    last_access_ts BIGINT,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX remote_media_sha256 ON remote_media (sha256);

-- Generated thumbnails (origin '' for local media), one per size and method.
CREATE TABLE media_thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method)
);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);
