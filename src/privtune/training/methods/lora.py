"""``lora``: low-rank adapters (Hu et al. 2022) with Hugging Face peft.

Each target linear layer ``W`` becomes ``W + (alpha / r) * B A`` with ``A`` (r x in) random and ``B`` (out x r) zero at
the start, so training starts from the base model; only ``A`` and ``B`` train (plus the classification head for
``--task classification``). Targets default to every linear layer of attention and MLP blocks
(:func:`privtune.models.loading.lora_target_modules`); the saved artifact is the adapter alone.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any, Iterator

from privtune.errors import ConfigError, fmt
from privtune.training.methods.base import METHODS, Method

if TYPE_CHECKING:
    from torch import nn


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """peft calls a transformers API that transformers 5 deprecates; nothing for the user to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
        yield


@METHODS.register("lora")
class LoRA(Method):
    name = "lora"
    adapter = True
    default_lr = 2e-3

    def prepare(self, model: nn.Module, *, cfg: Any, task: str) -> nn.Module:
        from peft import LoraConfig, TaskType, get_peft_model

        from privtune.models.loading import lora_target_modules

        targets = list(cfg.lora_targets) if cfg.lora_targets else lora_target_modules(model)
        names = {n for n, _ in model.named_modules()}
        unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if unmatched:
            raise ConfigError(fmt("--lora-targets", "names of linear layers of the model", unmatched,
                                  f"Found none by these names; defaults for this model: "
                                  f"{', '.join(lora_target_modules(model))}."))
        config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                            target_modules=targets, bias="none",
                            task_type=TaskType.SEQ_CLS if task == "classification" else TaskType.CAUSAL_LM)
        with quiet_peft():
            return get_peft_model(model, config)
