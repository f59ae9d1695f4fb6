"""PostgresProcess: a private PostgreSQL server that keeps its data across stop/start and a
SIGKILL, on the same port, and leaves nothing behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from marketpulse.testing import PostgresProcess, port_open
from marketpulse.testing._postgres import postgres_bin


def fetch(url: str, query: str) -> object:
    async def run() -> object:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return await conn.fetchval(query)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_stopped_killed_and_started_again_on_the_same_port_and_data(tmp_path: Path) -> None:
    try:
        postgres_bin()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    pg = PostgresProcess(tmp_path / "pg.log")
    with pg:
        fetch(pg.url, "CREATE TABLE t AS SELECT 7 AS x")
        home = pg.data_dir.parent
        assert pg.stop() == 0
        assert not port_open(pg.port)
        with pytest.raises(OSError):
            fetch(pg.url, "SELECT 1")
        pg.start()
        assert fetch(pg.url, "SELECT x FROM t") == 7
        pg.kill()  # a crash: the next start recovers from the WAL
        assert pg.process is not None
        pg.process.wait(10)
        pg.start()
        assert fetch(pg.url, "SELECT x FROM t") == 7
        assert "database system is ready to accept connections" in pg.log()
    assert pg.poll() is not None and not home.exists()
