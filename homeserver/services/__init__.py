"""Services: the server's logic. Each takes storage and its peers as constructor arguments; no globals."""
