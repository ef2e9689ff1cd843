"""Client-side Olm/Megolm on vodozemac. A client library: never imports homeserver."""
