"""Console sessions: the web console signs in once with an access key id and secret from
``api.credentials``; the broker answers with a session cookie, and the API then treats a request
carrying it like one signed by that key (the same Actions and Resources apply).

    broker_session=<key id>.<expires, epoch s>.<csrf token>.<HMAC-SHA256 of those, keyed by the key's secret>

The cookie is HttpOnly, SameSite=Strict, Path=/ and Secure behind TLS, and lasts
``SESSION_SECONDS``. Any replica can check it (it only needs the key's secret, which every replica
has), and a rotated secret or a removed key ends its sessions. Every request the cookie
authenticates must also carry ``X-Broker-Csrf`` with the token the sign-in answered (a page of
another site can send the cookie, never read the token): a cross-site request is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping

from aiohttp import web

from broker.api.keys import Key

COOKIE = "broker_session"
CSRF_HEADER = "X-Broker-Csrf"
SESSION_SECONDS = 8 * 3600


def _mac(key: Key, key_id: str, expires: int, csrf: str) -> str:
    message = f"broker-console|{key_id}|{expires}|{csrf}".encode()
    return hmac.new(key.secret.encode(), message, hashlib.sha256).hexdigest()


class Sessions:
    def __init__(self, keys: Callable[[], Mapping[str, Key]], now: Callable[[], float]) -> None:
        self._keys = keys
        self._now = now

    def sign_in(self, key_id: str, secret: str) -> tuple[Key, str, str] | None:
        """(the key, the cookie value, its CSRF token) if the secret is the key's, else None."""
        key = self._keys().get(key_id)
        if key is None or not hmac.compare_digest(key.secret.encode(), secret.encode()):
            return None
        expires = int(self._now()) + SESSION_SECONDS
        csrf = secrets.token_urlsafe(24)
        return key, f"{key_id}.{expires}.{csrf}.{_mac(key, key_id, expires, csrf)}", csrf

    def key_of(self, cookie: str) -> tuple[Key, str] | None:
        """(the key, the CSRF token) of a cookie that is genuine and not expired, else None."""
        parts = cookie.split(".")  # a key id may hold dots: the other three parts never do
        if len(parts) < 4:
            return None
        key_id, expires_text, csrf, mac = ".".join(parts[:-3]), parts[-3], parts[-2], parts[-1]
        key = self._keys().get(key_id)
        if key is None or not expires_text.isdigit() or int(expires_text) < self._now():
            return None
        if not hmac.compare_digest(_mac(key, key_id, int(expires_text), csrf), mac):
            return None
        return key, csrf

    def of_request(self, request: web.Request) -> tuple[Key | None, str]:
        """The key a request's cookie stands for, or None and why not."""
        found = self.key_of(request.cookies.get(COOKIE, ""))
        if found is None:
            return None, "The console session is not valid or has expired; sign in again."
        key, csrf = found
        if not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), csrf.encode()):
            return None, f"A request with the console's session must carry its {CSRF_HEADER} header."
        return key, ""


def set_cookie(response: web.StreamResponse, request: web.Request, value: str) -> None:
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"
    response.set_cookie(COOKIE, value, max_age=SESSION_SECONDS, path="/", httponly=True, samesite="Strict",
                        secure=secure)
