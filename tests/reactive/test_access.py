"""The admin key and the Authorization header forms, decided by Access."""

from __future__ import annotations

import base64
import json

import pytest

from marketpulse.reactive.access import Access, AccessDenied


@pytest.mark.parametrize("key", ["0123abcd" * 8, "prod:my-deployment|0123abcd", "a:b:c"])
async def test_an_admin_key_is_taken_whole_over_http_as_over_the_websocket(key: str) -> None:
    access = Access(key)
    assert access.websocket("Admin", key, None).kind == "admin"
    assert (await access.http(f"Convex {key}")).kind == "admin"
    identity = {"subject": "u1", "issuer": "https://i"}
    encoded = base64.b64encode(json.dumps(identity).encode()).decode()
    acting = await access.http(f"Convex {key}:{encoded}")
    assert acting.kind == "admin" and acting.acting_as == identity
    for wrong in (key[:-1], f"{key}x:{encoded}", key.rpartition(":")[0], ""):
        with pytest.raises(AccessDenied, match="Invalid admin key"):
            await access.http(f"Convex {wrong}")
    with pytest.raises(AccessDenied, match="Malformed acting-as identity"):
        await access.http(f"Convex {key}:not base64!")
