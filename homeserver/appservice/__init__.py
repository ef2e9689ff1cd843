"""Application services (bridges and bots): registrations, and what the server owes them."""
