"""Thin aiohttp handlers: parse and validate input, authenticate, call a service, return JSON."""
