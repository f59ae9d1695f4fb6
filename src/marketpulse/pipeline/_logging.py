"""Structured logging (structlog) for pipeline processes: JSON lines or a console renderer."""

from __future__ import annotations

import logging
import sys

import structlog

from marketpulse._log_format import stdlib_handler

__all__ = ["configure_logging"]


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    """Route structlog and stdlib logging (temporalio's) to stderr.

    Args:
        level: Minimum level name.
        json: One JSON object per line (for log shippers) instead of the console format.
    """
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        lvl = logging.INFO
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    stamp: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        # temporalio's records (an activity's failure, with its traceback) as JSON lines too.
        logging.basicConfig(level=lvl, handlers=[stdlib_handler(renderer, stamp)])
    else:
        logging.basicConfig(
            stream=sys.stderr, level=lvl, format="%(levelname)s %(name)s: %(message)s"
        )
    # One line per store write would drown everything else.
    logging.getLogger("httpx").setLevel(max(lvl, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
