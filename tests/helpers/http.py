"""Small HTTP helpers for the tests that start a real server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(url: str, body: bytes) -> tuple[int, dict]:
    """POST ``body`` as JSON; (status, parsed reply). An error reply that is not JSON comes
    back as ``{"body": <its first 200 bytes>}``."""
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text or b"{}")
        except ValueError:
            return e.code, {"body": text[:200]}
