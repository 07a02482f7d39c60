"""Loss attack (Yeom et al. 2018, "Privacy Risk in Machine Learning: Analyzing the Connection to
Overfitting")."""

from __future__ import annotations

import numpy as np

from privtune.evaluation.mia.base import ATTACKS, MIAAttack, MIAView


@ATTACKS.register("loss")
class LossAttack(MIAAttack):
    """``score = −(1/|S|) Σ_{t∈S} nll_t``: members have lower loss."""

    name = "loss"
    reference = "Yeom et al. 2018"
    definition = "-mean token NLL under the fine-tuned model"

    def scores(self, view: MIAView) -> np.ndarray:
        return -view.mean_nll()
