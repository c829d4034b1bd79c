"""`miatari watchlist …` commands."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add this area's sub-commands to the `miatari` parser."""
    del sub


__all__ = ["register", "argparse"]
