-- Which thread a notification belongs to ('main' for the main timeline, else the thread root's event ID),
-- so unread counts can follow threaded read receipts.
ALTER TABLE event_push_actions ADD COLUMN thread_id TEXT NOT NULL DEFAULT 'main';
CREATE INDEX event_push_actions_thread ON event_push_actions (user_id, room_id, thread_id, stream_ordering);
