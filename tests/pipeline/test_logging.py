"""The worker's ``--json-logs``: one JSON object a line, temporalio's records and tracebacks
included (docs/operations.md, "Logs")."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging, structlog
from marketpulse.pipeline._logging import configure_logging
configure_logging("INFO", json=True)
logging.getLogger("temporalio.activity").warning("Completing activity as failed",
                                                 exc_info=ValueError("boom"))
try:
    1 / 0
except ZeroDivisionError:
    structlog.get_logger("marketpulse.worker").exception("stream failed")
"""


def test_json_logs_are_json_lines_with_their_tracebacks() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in out.stderr.splitlines()]  # every line JSON
    assert [line["event"] for line in lines] == ["Completing activity as failed", "stream failed"]
    assert lines[0]["logger"] == "temporalio.activity" and lines[0]["level"] == "warning"
    assert "ValueError: boom" in lines[0]["exception"]
    assert "ZeroDivisionError" in lines[1]["exception"]
