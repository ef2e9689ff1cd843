"""The Matrix event core (placeholder; the public API is defined here once written)."""
