"""marketpulse.pipeline: the Temporal side (workflow, activities, worker, dev launcher).

Names are imported on first use (see ``marketpulse._lazy``): the workflow sandbox imports this
package, and so does every ``marketpulse`` command (through ``pipeline._cli``), which should not
load Temporal to print its help. The worker and activities live in
:mod:`marketpulse.pipeline.worker` and :mod:`marketpulse.pipeline.activities`.
"""

from typing import TYPE_CHECKING

from marketpulse._lazy import lazy_import

__all__ = [
    "TASK_QUEUE",
    "HealthReport",
    "KalshiStreamWorkflow",
    "MarketSet",
    "MarketsChange",
    "StreamConfig",
    "WorkflowStatus",
]

if TYPE_CHECKING:
    from .config import (
        TASK_QUEUE,
        HealthReport,
        MarketsChange,
        MarketSet,
        StreamConfig,
        WorkflowStatus,
    )
    from .workflow import KalshiStreamWorkflow
else:
    lazy_import(
        globals(),
        {
            "TASK_QUEUE": ".config",
            "HealthReport": ".config",
            "MarketsChange": ".config",
            "MarketSet": ".config",
            "StreamConfig": ".config",
            "WorkflowStatus": ".config",
            "KalshiStreamWorkflow": ".workflow",
        },
    )
