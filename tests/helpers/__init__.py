"""Helpers for the reliability tests: a toy factory model, shared store set-up."""
