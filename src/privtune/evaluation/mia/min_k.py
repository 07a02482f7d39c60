"""Min-K% Prob (Shi et al. 2024, "Detecting Pretraining Data from Large Language Models", ICLR)."""

from __future__ import annotations

import math

import numpy as np

from privtune.evaluation.mia.base import ATTACKS, MIAAttack, MIAView


@ATTACKS.register("min_k")
class MinKAttack(MIAAttack):
    """``score = mean of the ⌈k·n⌉ lowest token log-probabilities ln p(x_t | x_<t)`` among a record's ``n``
    tokens (k = 20 %): a non-member tends to contain a few very unlikely tokens, a member fewer."""

    name = "min_k"
    reference = "Shi et al. 2024"
    definition = "mean of the 20% lowest token log-probabilities under the fine-tuned model"
    k = 0.2

    def scores(self, view: MIAView) -> np.ndarray:
        ft = view.ft
        out = np.full(len(ft), np.nan)
        for i in range(len(ft)):
            sl = ft.record(i)
            lp = -ft.nll[sl][view.mask[sl]]
            if lp.size:
                m = max(1, math.ceil(self.k * lp.size))
                out[i] = np.partition(lp, m - 1)[:m].mean()
        return out
