"""The dev issuer's key file and tokens, and auth config files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from marketpulse.reactive.auth import (
    AuthConfig,
    AuthConfigError,
    DevIssuer,
    TokenVerifier,
    load_auth_config,
)


def test_the_dev_key_is_made_once_0600_and_keeps_its_kid(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "dev.pem"
    first = DevIssuer.from_key_file(path, "127.0.0.1", 3210)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    again = DevIssuer.from_key_file(path, "127.0.0.1", 3210)
    assert again.key.kid == first.key.kid and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "PRIVATE" not in repr(first.key) and first.issuer == "http://127.0.0.1:3210/auth/dev"
    # A token from the first instance verifies against the provider of the second.
    token = first.token(" Ada\tLovelace ")["token"]
    identity = TokenVerifier(AuthConfig((again.provider(),))).verify(token).identity
    assert identity["subject"] == "Ada Lovelace"
    assert identity["tokenIdentifier"] == "http://127.0.0.1:3210/auth/dev|Ada Lovelace"


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "bad\x00name"])
def test_dev_names_are_checked(tmp_path: Path, name: str) -> None:
    issuer = DevIssuer.from_key_file(tmp_path / "k.pem", "127.0.0.1", 1)
    with pytest.raises(ValueError, match="1-64 printable"):
        issuer.token(name)


def test_auth_config_from_json_toml_or_inline(tmp_path: Path) -> None:
    entry = {"domain": "https://id.example", "applicationID": "app"}
    as_json = tmp_path / "auth.config.json"
    as_json.write_text(json.dumps({"providers": [entry]}))
    as_toml = tmp_path / "auth.config.toml"
    as_toml.write_text('[[providers]]\ndomain = "https://id.example"\napplicationID = "app"\n')
    configs = [
        load_auth_config(as_json),
        load_auth_config(str(as_toml)),
        load_auth_config(json.dumps({"providers": [entry]})),
    ]
    for config in configs:
        (provider,) = config.providers
        assert provider.kind == "oidc" and provider.application_id == "app"
        assert provider.discovery_url == "https://id.example/.well-known/openid-configuration"
    with pytest.raises(AuthConfigError, match="cannot read"):
        load_auth_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(AuthConfigError, match="not valid"):
        load_auth_config(tmp_path / "bad.json")
