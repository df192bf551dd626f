"""The base of every error a user can act on.

Each stage raises its own subclass (``ConfigError``, ``SourceError``, ``NoFreeGPU``...), kept in the
module it belongs to; they all derive from :class:`LoclensError`, so the command line catches this
one type and prints the message as one line instead of a traceback. Subclasses also derive from
the builtin their callers catch (``ValueError`` for bad input, ``RuntimeError`` for the machine or
the network).
"""

from __future__ import annotations


class LoclensError(Exception):
    """A problem the user can fix; the message names the file, key or resource and what to do."""
