"""The campaign store: a Zarr v3 group that holds every fit result, chunk by chunk.

`layout` (array names, fingerprint), `lock` (the run lock), `store` (CampaignStore), `status`
(what `motex status` reports).
"""

from .layout import (ARRAY_NAMES, CENTRE, FRAME_LEDGER, LOCK_KEY, SEMI_AXES, SNAPSHOT, SNAPSHOT_SECONDS,
                     TIMING_ARRAYS, shape_columns)
from .status import STOP_REASONS, format_status, status_report
from .store import CampaignStore

__all__ = ["ARRAY_NAMES", "CENTRE", "FRAME_LEDGER", "LOCK_KEY", "SEMI_AXES", "SNAPSHOT", "SNAPSHOT_SECONDS",
           "STOP_REASONS", "TIMING_ARRAYS", "CampaignStore", "format_status", "shape_columns", "status_report"]
