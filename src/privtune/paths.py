"""Where privtune keeps things on disk."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """User cache directory (embedded base models, ...). Override with PRIVTUNE_CACHE."""
    env = os.environ.get("PRIVTUNE_CACHE")
    p = Path(env) if env else Path(platformdirs.user_cache_dir("privtune"))
    p.mkdir(parents=True, exist_ok=True)
    return p
