"""Test support: real servers on loopback sockets and a small Matrix HTTP client."""
