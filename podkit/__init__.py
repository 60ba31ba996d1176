"""podkit: small async programs for the extra containers of a Kubernetes pod.

Everything a user needs to write a program is importable from here::

    from podkit import Sidecar, option
"""

from __future__ import annotations

__version__ = "0.1.0"

from .logs import RateLimited, rfc3339, rfc3339_ns
from .options import OptionGroup, UsageError, option
from .program import InitTask, Program, Sidecar
from .retry import Backoff
from .secrets import SecretFile, redact_url, register_secret, scrub
from .units import format_duration, parse_duration, parse_size

__all__ = [
    "Backoff",
    "InitTask",
    "OptionGroup",
    "Program",
    "RateLimited",
    "SecretFile",
    "Sidecar",
    "UsageError",
    "__version__",
    "format_duration",
    "option",
    "parse_duration",
    "parse_size",
    "redact_url",
    "register_secret",
    "rfc3339",
    "rfc3339_ns",
    "scrub",
]
