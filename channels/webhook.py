"""Webhook: POSTs each outbound JSON payload to one URL (an SMS gateway, a partner API).

One `httpx.AsyncClient` per destination keeps connections alive between rows.
Outcomes by response:
- 2xx -> sent (`ack` is "HTTP <status> <first 200 characters of the body>");
- 408, 429, 5xx, a connection error or a timeout -> retry (the gateway may recover);
- any other status (400, 401, 403, 404, 422, ... and 1xx/3xx, since redirects are
  not followed: a moved endpoint is a configuration problem) -> dead.
Payloads are sent as they are, with `Content-Type: application/json` (or the
destination's `content_type`, e.g. `application/edi-x12` for a payer gateway); an
`Idempotency-Key` header carries `<destination>-<row id>`, the same on every
resend, for gateways that de-duplicate. With `keep_response=True` the `ack` holds
the whole body (up to 1 MiB; a payer's 271/278 answer is applied from it) instead
of its head.
"""
from __future__ import annotations

import httpx

from channels.outbound import Delivery, DeliveryResult, dead, retry, sent

_BODY_HEAD = 200
_BODY_KEPT = 1024 * 1024
_RETRY_STATUSES = {408, 425, 429}


def classify(status: int) -> str:
    """The outcome for an HTTP status: sent / retry / dead."""
    if 200 <= status < 300:
        return "sent"
    if status in _RETRY_STATUSES or status >= 500:
        return "retry"
    return "dead"


class Webhook:
    """A connector (channels.outbound.Connector) for one HTTP endpoint."""

    def __init__(self, url: str, *, timeout: float = 10, headers: dict[str, str] | None = None,
                 content_type: str = "application/json", keep_response: bool = False):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url {url!r} must start with http:// or https://")
        self.url = url
        self.shown_url = _shown(url)    # what errors name: no credentials, no query string
        self._kept = _BODY_KEPT if keep_response else _BODY_HEAD
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                         headers={"Content-Type": content_type, **(headers or {})})

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        try:
            response = await self._client.post(self.url, content=delivery.payload, headers={
                "Idempotency-Key": f"{delivery.destination}-{delivery.id}"})
        except httpx.TimeoutException:
            return retry(f"no response from {self.shown_url} before the timeout")
        except httpx.HTTPError as exc:
            return retry(f"cannot reach {self.shown_url}: {type(exc).__name__}")
        head = response.text[:self._kept]
        ack = f"HTTP {response.status_code} {head}".rstrip()
        outcome = classify(response.status_code)
        if outcome == "sent":
            return sent(ack=ack)
        detail = f"HTTP {response.status_code} {response.reason_phrase} from {self.shown_url}"
        return retry(detail, ack=ack) if outcome == "retry" else dead(detail, ack=ack)

    async def close(self) -> None:
        await self._client.aclose()


def _shown(url: str) -> str:
    """scheme://host[:port]/path of a URL: user, password and query (api keys) left out."""
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
