"""Server-server API: signing keys, X-Matrix auth, sender queues, inbound PDUs and EDUs."""
