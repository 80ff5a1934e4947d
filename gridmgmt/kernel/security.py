"""Security headers on every response (pages, APIs, static files, errors).

A small `after_request` rather than Flask-Talisman (which installs and was tried): Talisman
rewrites the session cookie settings at start-up (`SESSION_COOKIE_SAMESITE`, `_HTTPONLY`, and
`_SECURE` unless told not to), which sign-in owns; it sends HSTS to anyone who sends
`X-Forwarded-Proto: https`, trusted proxy or not; and the cached Folium page needs its scripts'
hashes anyway. What is left is a few dozen lines.

The policy:

- `Content-Security-Policy`: everything from the app itself (`'self'`), scripts only from the
  app's files, with this response's nonce (templates write `nonce="{{ csp_nonce() }}"` on an
  inline script) or, for the Folium map served from a cache, with the hash of each of its
  inline scripts; an injected inline script or event handler never runs. No plugins, no
  `<base>` rewriting, forms only to the app. Styles allow `'unsafe-inline'`: Folium writes
  `<style>` blocks and `style=""` attributes, and a style cannot run code. Images also from
  `data:`/`blob:` (Leaflet's) and the tile server's origin when a base map is set (`TILE_URL`).
- Frame protection: `frame-ancestors 'self'` and `X-Frame-Options: SAMEORIGIN` (the map of
  `/maps` is its own page `/maps/frame` in an iframe of the same origin; no other site frames us).
- `X-Content-Type-Options: nosniff`, `Referrer-Policy: strict-origin-when-cross-origin` (case
  numbers in paths stay on the site), `Strict-Transport-Security` only on HTTPS requests
  (`request.is_secure`: behind a proxy only when the app trusts the proxy's headers).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

from flask import Flask, Response, g, request

from gridmgmt.kernel.settings import city_settings

# Pages whose HTML is not rendered by a template of ours at this request (the Folium map,
# the same bytes from Redis for every request, so no nonce can be in them): the policy of the
# response allows the SHA-256 of each of their inline scripts (a 1 MB map hashes in ~2 ms).
HASHED_AT_SERVING = {"maps.map_frame"}
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
HSTS = "max-age=31536000; includeSubDomains"


def csp_nonce() -> str:
    """This response's nonce for inline scripts (a template global)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(18)
    return str(g.csp_nonce)


def tile_origin(tile_url: str) -> str:
    """The scheme and host of a tile URL template (`https://{s}.tile.example.org/...` →
    `https://*.tile.example.org`), or "" without a base map."""
    if not tile_url:
        return ""
    parts = urlsplit(tile_url)
    host = re.sub(r"\{[^}]*\}", "*", parts.netloc)
    return f"{parts.scheme}://{host}" if parts.scheme and host else ""


def content_security_policy(nonce: str, tiles: str, hashes: Sequence[str] = ()) -> str:
    """The policy of one response (`hashes`: of inline scripts allowed besides the nonce)."""
    scripts = " ".join(["'self'", f"'nonce-{nonce}'", *(f"'sha256-{h}'" for h in hashes)])
    images = " ".join(filter(None, ("'self'", "data:", "blob:", tile_origin(tiles))))
    return "; ".join(
        (
            "default-src 'self'",
            f"script-src {scripts}",
            "style-src 'self' 'unsafe-inline'",
            f"img-src {images}",
            "connect-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'self'",
        )
    )


def script_hashes(response: Response) -> list[str]:
    """The base64 SHA-256 of each attribute-less inline script of an HTML response."""
    if response.mimetype != "text/html" or response.direct_passthrough:
        return []
    return sorted(
        {
            base64.b64encode(hashlib.sha256(script).digest()).decode()
            for script in INLINE_SCRIPT.findall(response.get_data())
        }
    )


def set_headers(response: Response) -> Response:
    """Add the security headers to a response."""
    hashes = script_hashes(response) if request.endpoint in HASHED_AT_SERVING else []
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(
        csp_nonce(), city_settings().tile_url, hashes
    )
    headers["X-Frame-Options"] = "SAMEORIGIN"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    if request.is_secure:
        headers["Strict-Transport-Security"] = HSTS
    return response


def init_app(app: Flask) -> None:
    """Send the headers with every response; templates get `csp_nonce()`."""
    app.add_template_global(csp_nonce, "csp_nonce")
    app.after_request(set_headers)
