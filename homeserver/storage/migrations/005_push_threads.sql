-- Which thread a notification belongs to ('main' for the main timeline, else the thread root's event ID),
-- so unread counts can follow threaded read receipts.
ALTER TABLE event_push_actions ADD COLUMN thread_id TEXT NOT NULL DEFAULT 'main';
CREATE INDEX event_push_actions_thread ON event_push_actions (user_id, room_id, thread_id, stream_ordering);
-- The thread index starts with (user_id, room_id) and serves the per-room counts too; one index less
-- to update for every recipient of every event.
DROP INDEX event_push_actions_room;
