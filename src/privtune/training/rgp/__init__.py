"""RGP, reparametrized gradient perturbation (Yu et al. 2021): carriers (:mod:`.carriers`) and layers (:mod:`.layers`).

The methods ``rgp`` and ``dp-rgp`` that use them are in :mod:`privtune.training.methods.rgp`.
"""

from privtune.training.rgp.carriers import decompose, project, reconstruct
from privtune.training.rgp.layers import RGPLinear, rgp_layers, target_linear_layers

__all__ = ["RGPLinear", "decompose", "project", "reconstruct", "rgp_layers", "target_linear_layers"]
