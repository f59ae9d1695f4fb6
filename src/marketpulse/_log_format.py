"""The standard library's log records in structlog's format, for every command's logs."""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import Processor


def stdlib_handler(renderer: Processor, stamp: list[Processor]) -> logging.Handler:
    """A stderr handler that renders the standard library's records (uvicorn's, temporalio's,
    asyncio's) as ``renderer`` renders structlog's own: one JSON object a line, say, with a
    traceback as its ``exception`` field rather than lines of its own.

    Args:
        renderer: structlog's last processor (JSON or console).
        stamp: the processors that add what structlog's own events carry (level, time).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                *stamp,
            ],
        )
    )
    return handler
