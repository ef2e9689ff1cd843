"""Tests for the e-Office connector contract and its reference sandbox service."""
