"""logformat: the app's own log format in, one JSON object per record out.

The program is in `program`, the record conversion in `convert`, the
standard-input reader in `stdin`.
"""

from .convert import Converter
from .program import LogFormat, main

__all__ = ["Converter", "LogFormat", "main"]
