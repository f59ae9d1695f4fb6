"""``serve`` is generic: the assembling CLI chooses its default functions and web assets."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import marketpulse.reactive
from marketpulse.reactive import _cli

FUNCTIONS_MODULE = """
from marketpulse.reactive import FunctionModule, QueryCtx

greetings = FunctionModule("greetings")


@greetings.query()
def hello(ctx: QueryCtx) -> str:
    return "hello"
"""


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records what ``serve`` would run, instead of running it."""
    calls: list[dict[str, Any]] = []

    async def record(
        settings: _cli.ServeSettings,
        admin_key: str,
        modules: list[Any],
        static: Path | None,
        auth: tuple[Any, Any] = (None, None),
    ) -> None:
        call = {"modules": [m.name for m in modules], "static": static}
        if auth != (None, None):
            verifier, dev = auth
            call["issuers"] = [p.issuer for p in verifier.providers]
            call["dev"] = dev is not None
        calls.append(call)

    monkeypatch.setattr(_cli, "_serve", record)
    monkeypatch.setattr(_cli, "configure_logging", lambda level: None)
    monkeypatch.setenv("MARKETPULSE_ADMIN_KEY", "k" * 64)
    monkeypatch.delenv("MARKETPULSE_FUNCTIONS", raising=False)
    monkeypatch.delenv("MARKETPULSE_STATIC_DIR", raising=False)
    return calls


@pytest.fixture
def functions_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "greetings_app.py").write_text(FUNCTIONS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "greetings_app"


def serve_app(**options: Any) -> typer.Typer:
    app = typer.Typer()
    _cli.register(app, **options)

    @app.command()
    def other() -> None:  # a second command, so typer keeps ``serve`` as a subcommand
        """Unused."""

    return app


def test_serve_runs_the_default_functions_and_static_dir_it_was_given(
    served: list[dict[str, Any]], functions_module: str, tmp_path: Path
) -> None:
    app = serve_app(default_functions=functions_module, static_dir=tmp_path)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    assert served == [{"modules": ["greetings"], "static": tmp_path}]


def test_flags_and_environment_override_the_defaults(
    served: list[dict[str, Any]],
    functions_module: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = serve_app(default_functions="no_such_app.functions", static_dir=tmp_path / "default")
    assets = tmp_path / "assets"
    result = CliRunner().invoke(
        app, ["serve", "--functions", functions_module, "--static-dir", str(assets)]
    )
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("MARKETPULSE_FUNCTIONS", "[]")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    assert served == [
        {"modules": ["greetings"], "static": assets},
        {"modules": [], "static": tmp_path / "default"},
    ]


def test_a_missing_default_is_a_warning_but_a_named_module_must_exist(
    served: list[dict[str, Any]],
) -> None:
    app = serve_app(default_functions="no_such_app.functions")
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert served == [{"modules": [], "static": None}]
    result = CliRunner().invoke(app, ["serve", "--functions", "no_such_app.functions"])
    assert result.exit_code == 2
    assert "cannot import functions module" in result.output


def test_functions_are_found_in_the_current_directory_as_python_m_finds_them(
    served: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ``marketpulse`` console script's sys.path has no current directory (``python -m``'s
    # has): ``serve --functions my_app`` in the app's folder said "No module named 'my_app'".
    (tmp_path / "greetings_here.py").write_text(FUNCTIONS_MODULE)
    monkeypatch.chdir(tmp_path)
    cwd = os.getcwd()
    monkeypatch.setattr(
        sys, "path", [p for p in sys.path if os.path.abspath(p or os.curdir) != cwd]
    )
    monkeypatch.delitem(sys.modules, "greetings_here", raising=False)
    result = CliRunner().invoke(serve_app(), ["serve", "--functions", "greetings_here"])
    assert result.exit_code == 0, result.output
    assert served == [{"modules": ["greetings"], "static": None}]
    assert sys.path[-1] == cwd  # searched last: a file here never shadows a package


def test_auth_flags_choose_the_providers_and_a_real_one_turns_the_dev_sign_in_off(
    served: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = serve_app()
    key = tmp_path / "dev.pem"
    assert CliRunner().invoke(app, ["serve", "--dev-auth-key", str(key)]).exit_code == 0
    assert served[-1]["issuers"] == ["http://127.0.0.1:3210/auth/dev"] and served[-1]["dev"]
    # Behind a balancer: the issuer is where users are, the same on every node.
    argv = ["serve", "--dev-auth-key", str(key), "--dev-auth-url", "http://lb.example:8080/"]
    assert CliRunner().invoke(app, argv).exit_code == 0
    assert served[-1]["issuers"] == ["http://lb.example:8080/auth/dev"]
    config = '{"providers": [{"domain": "https://id.example", "applicationID": "a"}]}'
    monkeypatch.setenv("MARKETPULSE_AUTH_CONFIG", config)
    assert CliRunner().invoke(app, ["serve", "--dev-auth-key", str(key)]).exit_code == 0
    assert served[-1]["issuers"] == ["https://id.example"] and not served[-1]["dev"]
    monkeypatch.setenv("MARKETPULSE_AUTH_CONFIG", '{"providers": [{"type": "saml"}]}')
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "unknown provider type" in result.output


def test_without_defaults_serve_runs_no_functions_and_no_assets(
    served: list[dict[str, Any]],
) -> None:
    assert CliRunner().invoke(serve_app(), ["serve"]).exit_code == 0
    assert served == [{"modules": [], "static": None}]


def test_marketpulse_serve_defaults_to_the_market_data_app_and_its_dashboard(
    served: list[dict[str, Any]],
) -> None:
    from marketpulse.cli import app
    from marketpulse.dashboard import static_dir

    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    assert served == [
        {"modules": ["alerts", "settings", "watchlists", "marketData"], "static": static_dir()}
    ]


def test_the_store_imports_no_application_package() -> None:
    """``marketpulse.reactive`` imports only itself and the shared helpers (asyncio, lazy imports,
    the admin key, the log format)."""
    allowed = (
        "marketpulse.reactive",
        "marketpulse._aio",
        "marketpulse._lazy",
        "marketpulse._admin_key",
        "marketpulse._log_format",
    )
    package = Path(marketpulse.reactive.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found += [
                f"{path.relative_to(package)}: {name}"
                for name in names
                if name.startswith("marketpulse") and not name.startswith(allowed)
            ]
        text = path.read_text(encoding="utf-8")
        found += [
            f"{path.relative_to(package)}: names {app_module!r}"
            for app_module in ("marketpulse.marketdata", "marketpulse.dashboard")
            if app_module in text
        ]
    assert found == []


def test_accept_database_loss_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bool] = []

    async def record(settings: _cli.ServeSettings, *_: Any) -> None:
        seen.append(settings.accept_database_loss)

    monkeypatch.setattr(_cli, "_serve", record)
    monkeypatch.setattr(_cli, "configure_logging", lambda level: None)
    monkeypatch.setenv("MARKETPULSE_ADMIN_KEY", "k" * 64)
    monkeypatch.delenv("MARKETPULSE_ACCEPT_DATABASE_LOSS", raising=False)
    app = serve_app()
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert CliRunner().invoke(app, ["serve", "--accept-database-loss"]).exit_code == 0
    monkeypatch.setenv("MARKETPULSE_ACCEPT_DATABASE_LOSS", "1")
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert seen == [False, True, True]


def test_a_refused_database_is_one_paragraph_and_exit_code_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from marketpulse.reactive.persistence._identity import Marker, marker_path, write_marker

    db = tmp_path / "store.sqlite"
    write_marker(marker_path(db), Marker("a" * 32, 123))  # a store was here; its file is gone
    monkeypatch.setattr(_cli, "configure_logging", lambda level: None)
    monkeypatch.setenv("MARKETPULSE_ADMIN_KEY", "k" * 64)
    result = CliRunner().invoke(serve_app(), ["serve", "--db", f"sqlite:{db}", "--port", "0"])
    assert result.exit_code == _cli.EXIT_DATABASE_REFUSED == 3
    assert result.output.startswith(f"Refusing to start on {db}: the database file is missing")
    assert result.output.count("\n") == 1 and "--accept-database-loss" in result.output
    assert "Traceback" not in result.output and not db.exists()


def test_every_limit_is_a_flag_and_an_env_var(
    monkeypatch: pytest.MonkeyPatch, served: list[dict[str, Any]]
) -> None:
    from marketpulse.reactive.limits import SERVE_LIMITS

    seen: list[Any] = []

    async def record(settings: _cli.ServeSettings, *rest: Any) -> None:
        seen.append(settings.connection_limits())

    monkeypatch.setattr(_cli, "_serve", record)
    monkeypatch.setenv("MARKETPULSE_MAX_BODY_BYTES", "12345")
    result = CliRunner().invoke(
        serve_app(), ["serve", "--max-connections", "77", "--header-timeout", "2.5",
                      "--max-json-depth", "9", "--cors-origin", "https://a.test"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    limits = seen[0]
    assert (limits.max_connections, limits.header_timeout_s) == (77, 2.5)
    assert (limits.max_json_depth, limits.max_body_bytes) == (9, 12345)
    command = typer.main.get_command(serve_app()).commands["serve"]  # type: ignore[attr-defined]
    flags = {opt for param in command.params for opt in param.opts}
    for name in SERVE_LIMITS:
        assert name in _cli.ServeSettings.model_fields
        assert _cli._limit_flag(name) in flags, name


def test_a_database_that_is_no_url_is_refused_before_anything_starts(
    served: list[dict[str, Any]],
) -> None:
    result = CliRunner().invoke(serve_app(), ["serve", "--db", "/data/store.sqlite"])
    assert result.exit_code == 2 and served == []
    assert "say sqlite:/data/store.sqlite" in " ".join(result.output.split())
    result = CliRunner().invoke(serve_app(), ["serve", "--db", "mysql://u:hunter2@h/db"])
    assert result.exit_code == 2 and served == []
    assert "unknown database URL" in result.output and "hunter2" not in result.output
    result = CliRunner().invoke(serve_app(), ["serve", "--db", "mysql://h/db?password=hunter2"])
    assert result.exit_code == 2 and "hunter2" not in result.output


def test_an_unreachable_database_or_a_taken_port_is_one_line_and_exit_code_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from marketpulse.testing import free_port

    monkeypatch.setattr(_cli, "configure_logging", lambda level: None)
    monkeypatch.setenv("MARKETPULSE_ADMIN_KEY", "k" * 64)
    nobody = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/nowhere"
    result = CliRunner().invoke(serve_app(), ["serve", "--db", nobody, "--port", "0"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("marketpulse serve: cannot connect to PostgreSQL")
    assert result.output.count("\n") == 1 and "hunter2" not in result.output
    # libpq and asyncpg also take the password as a query option.
    for nobody in (
        f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?password=hunter2",
        f"postgresql://127.0.0.1:{free_port()}/nowhere?user=postgres&Password=hunter2&node=a",
    ):
        result = CliRunner().invoke(serve_app(), ["serve", "--db", nobody, "--port", "0"])
        assert result.exit_code == 1, result.output
        assert "cannot connect to PostgreSQL" in result.output
        assert "hunter2" not in result.output and "password=***" in result.output.lower()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        db = f"sqlite:{tmp_path / 's.sqlite'}"
        result = CliRunner().invoke(serve_app(), ["serve", "--db", db, "--port", port])
    # uvicorn's own exit code for this, 3, is EXIT_DATABASE_REFUSED here.
    assert result.exit_code == 1, result.output
    assert f"marketpulse serve: cannot listen on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output


def test_told_port_0_the_listening_line_names_the_port_it_serves_on(tmp_path: Path) -> None:
    import json
    import sys

    from marketpulse.testing import ManagedProcess, http_ok

    log = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "marketpulse", "serve", "--port", "0"]
    argv += ["--db", f"sqlite:{tmp_path / 's.sqlite'}"]

    def listening() -> dict[str, Any] | None:
        for line in log.read_text().splitlines():
            if line.startswith("{") and '"store listening"' in line:
                return dict(json.loads(line))
        return None

    with ManagedProcess("store", argv, log_path=log) as store:
        store.wait_ready(lambda: listening() is not None, 60, "listening")
        url = str(listening()["url"])  # type: ignore[index]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert http_ok(url + "/health")


def test_the_metrics_token_guards_the_metrics_port_too(tmp_path: Path) -> None:
    """``MARKETPULSE_METRICS_TOKEN`` with ``--metrics-port``: the port answers only the token
    (prometheus_client's own server, used before, answered anyone)."""
    import urllib.error
    import urllib.request

    from marketpulse.testing import StoreProcess, free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with StoreProcess(
        tmp_path / "s.sqlite",
        extra=["--metrics-port", str(port)],
        env={"MARKETPULSE_METRICS_TOKEN": "m-token"},
        log_path=tmp_path / "serve.log",
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
            assert refused.value.code == 401
            assert refused.value.headers["WWW-Authenticate"] == "Bearer"
        asked = urllib.request.Request(url, headers={"Authorization": "Bearer m-token"})
        with urllib.request.urlopen(asked, timeout=10) as answer:
            assert b"marketpulse_mutations_committed_total" in answer.read()
