"""Application services that run beside the server over the appservice API."""
