"""Auditing a room's signed event log: the offline verifier (``verify``) depends only on
``homeserver.events``, so an auditor can run it anywhere with nothing but the export file."""
