"""What every installer module reports through: InstallError (a sentence for the user) and the log."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]  # one line for the user (print, or a list's append in tests)


class InstallError(Exception):
    """An installation problem described in a sentence for the user; install.py prints it and exits 1."""
