"""The store's log, as an operator reads it (docs/operations.md, "Logs"): under a supervisor
every line is one JSON object, the standard library's records (the engine's, uvicorn's) too,
and what a client can cause at will is throttled."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from marketpulse.testing import AdminClient, FunctionError, StoreProcess

TESTS = Path(__file__).resolve().parents[1] / "reactive"


def test_every_line_is_json_and_a_raising_function_logs_a_few_tracebacks(
    tmp_path: Path,
) -> None:
    log = tmp_path / "store.log"
    with StoreProcess(
        tmp_path / "s.sqlite", functions="example_app", pythonpath=[TESTS], log_path=log
    ) as store:
        client = AdminClient(store.url)
        for _ in range(12):
            with contextlib.suppress(FunctionError):
                client.mutation("messages:send_then_fail", {"channel": "a", "body": "x"})
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # all JSON
    raised = [line for line in lines if line["event"] == "function messages:send_then_fail raised"]
    assert len(raised) == 5, raised  # 5 per 10 s per function, the rest counted
    assert "ValueError: changed my mind" in raised[0]["exception"]
    assert raised[0]["logger"] == "marketpulse.reactive.engine" and "timestamp" in raised[0]
    assert {line["event"] for line in lines} >= {"store listening", "store stopped"}
