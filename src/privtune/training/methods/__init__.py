"""Fine-tuning methods as small strategy objects behind the :data:`METHODS` registry (one file each).

A method decides which parameters train (all, LoRA adapters, or RGP gradient carriers) and whether updates are
private (DP-SGD); the trainer loop is the same for all of them.
"""

from privtune.training.methods.base import METHODS, Method, get_method

from privtune.training.methods import fft as _fft  # noqa: F401,E402
from privtune.training.methods import lora as _lora  # noqa: F401,E402
from privtune.training.methods import dp_fft as _dp_fft  # noqa: F401,E402
from privtune.training.methods import dp_lora as _dp_lora  # noqa: F401,E402
from privtune.training.methods import rgp as _rgp  # noqa: F401,E402

__all__ = ["METHODS", "Method", "get_method"]
