-- Usage metering for billing (homeserver/services/usage.py).
--
-- One row per user per UTC day on which the user made at least one authenticated client request
-- (day is 'YYYY-MM-DD'). Written once per user per day: the server remembers in memory which users it
-- has recorded today, so the request path does no SQL after a user's first request of the day.
-- The primary key leads with the day because every report reads a range of days.
CREATE TABLE user_daily_visits (
    user_id TEXT NOT NULL,
    day TEXT NOT NULL,
    PRIMARY KEY (day, user_id)
);

-- The report counts events, uploads and new rooms per day of a period: without these indexes each
-- of those queries would read the whole table. (events_room_ts leads with room_id, so it cannot
-- serve a range over all rooms.)
CREATE INDEX events_origin_server_ts ON events (origin_server_ts);
CREATE INDEX local_media_created_ts ON local_media (created_ts);
CREATE INDEX rooms_created_ts ON rooms (created_ts);
