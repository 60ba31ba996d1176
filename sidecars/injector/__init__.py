"""injector: `podkit inject` as a mutating admission webhook.

The program is in `program`; the patch it answers with is built by
`podkit.inject`, the same code as `podkit inject`.
"""

from .program import Injector, main

__all__ = ["Injector", "main"]
