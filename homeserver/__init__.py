"""Qasid homeserver: client-server API, rooms, storage, events core, admin and policy."""
