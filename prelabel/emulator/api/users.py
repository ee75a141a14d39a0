"""The account behind the API key: key checks, ``/api_status``, ``/user`` and ``/users/{name}``.

The 401 bodies matter: the SDK tells a missing key from a wrong one by their text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prelabel.emulator.api.base import ApiBase
from prelabel.emulator.store.records import NotFound
from prelabel.emulator.wire import Request, Response, json_response

NOT_PROVIDED = "Authentication credentials were not provided."
INVALID_KEY = "Invalid token."


class UsersApi(ApiBase):
    """API key checks and the user endpoints."""

    def authenticate(self, headers: Mapping[str, str]) -> Response | None:
        """``None`` if the ``APIKey`` header carries the right key, else DRF's 401.

        A missing header gets the text the SDK maps to ``AuthenticationError``; a wrong key gets
        "Invalid token." (an ``AuthenticationError`` at client construction, a plain
        ``NetworkError`` afterwards, exactly as the SDK treats any other 401 body).
        """
        header = headers.get("authorization")
        challenge = (("WWW-Authenticate", "APIKey"),)
        if not header:
            return json_response(401, {"detail": NOT_PROVIDED}, challenge)
        scheme, _, key = header.partition(" ")
        if scheme != "APIKey" or key.strip() != self.api_key:
            return json_response(401, {"detail": INVALID_KEY}, challenge)
        return None

    def api_status(self, request: Request) -> Response:
        return json_response(200, {})

    def _user_json(self, username: str) -> dict[str, Any]:
        return {
            "username": username,
            "email": f"{username}@example.com" if username == self.username else None,
            "created_at": self.user_created_at,
            "is_organization": username != self.username,
        }

    def get_current_user(self, request: Request) -> Response:
        return json_response(200, self._user_json(self.username))

    def get_user(self, request: Request, username: str) -> Response:
        if username != self.username and username not in self.store.owners():
            raise NotFound("Not found.")
        return json_response(200, self._user_json(username))
