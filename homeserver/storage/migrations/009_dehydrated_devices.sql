-- MSC3814 dehydrated devices: at most one per user, a device whose (client-encrypted) state is kept
-- here so a user's next login can pick up the room keys sent to it while no client was running.
CREATE TABLE dehydrated_devices (
    user_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL
);
