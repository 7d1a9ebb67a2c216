"""The bearer token: who may use a server bound to more than the local machine.

Requests carry `Authorization: Bearer T`. A browser cannot add that header to an `<img>`,
`<video>` or download link, so GET and HEAD requests may carry the token in the
`vidrestore_token` cookie instead (the page sets it, SameSite=Strict); requests that change
something (upload, cancel, delete) need the header, so another site cannot make a browser
send them.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

COOKIE = "vidrestore_token"
SAFE_METHODS = ("GET", "HEAD")


def loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def check_token(request: Request, token: str | None) -> None:
    """Raise 401 unless the request carries `token` (nothing to check when it is None)."""
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        given = request.cookies.get(COOKIE, "") if request.method in SAFE_METHODS else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' "
                                 "(the token `vidrestore serve --token` was given)",
                            headers={"WWW-Authenticate": "Bearer"})
