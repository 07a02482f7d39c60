"""Reference-model attack: the fine-tuned model's loss calibrated by the base model's loss on the same tokens.

Carlini et al. 2021 ("Extracting Training Data from Large Language Models", USENIX Security) compare against a
reference model; Mireshghallah et al. 2022 ("Quantifying Privacy Risks of Masked Language Models Using
Membership Inference Attacks") use the likelihood ratio. With the base model as reference, what the base
already predicts well (common phrases, easy formats) stops looking like membership.
"""

from __future__ import annotations

import numpy as np

from privtune.evaluation.mia.base import ATTACKS, MIAAttack, MIAView


@ATTACKS.register("reference")
class ReferenceAttack(MIAAttack):
    """``score = mean_nll_base − mean_nll_ft`` (nats per token: the log likelihood ratio per token)."""

    name = "reference"
    needs_base = True
    reference = "Carlini et al. 2021; Mireshghallah et al. 2022"
    definition = "mean token NLL under the base model minus under the fine-tuned model (log likelihood ratio)"

    def scores(self, view: MIAView) -> np.ndarray:
        return view.mean_nll(base=True) - view.mean_nll()
