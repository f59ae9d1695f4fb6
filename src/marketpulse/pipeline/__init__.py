"""marketpulse.pipeline: the Temporal side (workflow, activities, worker, dev launcher).

Importing this package stays light (config and workflow only) because the workflow sandbox
imports it; the worker and activities live in :mod:`marketpulse.pipeline.worker` and
:mod:`marketpulse.pipeline.activities`.
"""

from marketpulse.pipeline.config import (
    TASK_QUEUE,
    HealthReport,
    MarketsChange,
    MarketSet,
    StreamConfig,
    WorkflowStatus,
)
from marketpulse.pipeline.workflow import KalshiStreamWorkflow

__all__ = [
    "TASK_QUEUE",
    "HealthReport",
    "KalshiStreamWorkflow",
    "MarketSet",
    "MarketsChange",
    "StreamConfig",
    "WorkflowStatus",
]
