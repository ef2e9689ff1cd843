"""The e-Office bridge: an application service linking Matrix rooms to e-Office files (its own
process; it never imports the homeserver)."""
