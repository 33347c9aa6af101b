"""Helpers for the reliability tests: shared store set-up, servers, custom data."""
