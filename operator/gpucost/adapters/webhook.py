"""Budget alerts by HTTP POST: to Alertmanager's /api/v2/alerts, or any endpoint taking JSON."""

from __future__ import annotations

from typing import Any

import requests

TIMEOUT_SECONDS = 5.0


def post(url: str, body: Any) -> str | None:
    """None when the endpoint answered 2xx, else why not (the caller retries on its next tick)."""
    try:
        resp = requests.post(url, json=body, timeout=TIMEOUT_SECONDS)
    except requests.RequestException as e:
        return f"POST {url}: {type(e).__name__}: {e}"
    if not resp.ok:
        return f"POST {url}: HTTP {resp.status_code} {resp.text[:200]}"
    return None
