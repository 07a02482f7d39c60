"""DP-SGD machinery: per-example gradient engines (clip and sum), Gaussian noise, extra grad samplers.

An engine turns per-example losses into ``sum_i clip_C(grad L_i)`` for the trainable parameters; privtune adds the
noise and takes the step (:mod:`privtune.training.dp.noise`). Engines register by name in :data:`ENGINES`; a faster
one is one new file.
"""

from privtune.training.dp.engine import ENGINES, ClipStats, DPEngine, get_engine

# Register the built-in engines.
from privtune.training.dp import hooks as _hooks  # noqa: F401,E402
from privtune.training.dp import ghost as _ghost  # noqa: F401,E402
from privtune.training.dp import bk as _bk  # noqa: F401,E402

__all__ = ["ENGINES", "ClipStats", "DPEngine", "get_engine"]
