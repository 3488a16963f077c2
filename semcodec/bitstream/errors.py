"""The one exception a reader of ``tokens.bin`` raises for anything wrong with the file."""
from __future__ import annotations

from ..errors import SemcodecError


class BitstreamError(SemcodecError, ValueError):
    """A token stream is unreadable: truncated, corrupt, not a token stream, of an unsupported
    version, or it needs a token prior that was not given / does not match.

    The message is one user-facing line that names the file and what is wrong, for example
    ``tokens.bin is truncated: group 3 of 7 is incomplete``.
    """
