"""zlib-ratio attack (Carlini et al. 2021, "Extracting Training Data from Large Language Models")."""

from __future__ import annotations

import numpy as np

from privtune.evaluation.mia.base import ATTACKS, MIAAttack, MIAView


@ATTACKS.register("zlib")
class ZlibAttack(MIAAttack):
    """``score = −mean_nll / zlib_bytes(text)``: the model's log-perplexity relative to a model-free measure
    of the text's entropy, so that texts that are simply repetitive or easy do not look like members."""

    name = "zlib"
    reference = "Carlini et al. 2021"
    definition = "-(mean token NLL under the fine-tuned model) / (bytes of the zlib-compressed text)"

    def scores(self, view: MIAView) -> np.ndarray:
        return -view.mean_nll() / view.zlib_bytes()
