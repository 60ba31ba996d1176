"""reloader: reload the app when its mounted configuration really changes.

The program is in `program`; the scan and hash of the watched tree in `tree`,
the reload actions in `actions`, templates in `render`, the check after a
reload in `verify`.
"""

from .program import Reloader, main

__all__ = ["Reloader", "main"]
