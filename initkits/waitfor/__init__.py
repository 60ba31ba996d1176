"""waitfor: wait until dependencies answer, then exit 0 or exec the app.

The program is in `program`; the target grammar and probe base in `base`, one
module per scheme in `probe_*`.
"""

from .base import REGISTRY, NotReady, Probe, register
from .program import WaitFor, main, parse_statuses

__all__ = ["REGISTRY", "NotReady", "Probe", "WaitFor", "main", "parse_statuses", "register"]
