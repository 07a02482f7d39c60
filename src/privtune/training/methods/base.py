"""The method interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from privtune.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn


class Method(ABC):
    """How a base model is fine-tuned.

    ``private``: updates are DP-SGD (per-example clipping + Gaussian noise, Poisson sampling).
    ``adapter``: only adapter weights train and are saved (the base stays frozen and is loaded from its spec).
    """

    name: ClassVar[str] = ""
    private: ClassVar[bool] = False
    adapter: ClassVar[bool] = False
    #: default learning rate (AdamW) when the config gives none; LoRA and DP tolerate larger steps
    default_lr: ClassVar[float] = 1e-3

    @abstractmethod
    def prepare(self, model: nn.Module, *, cfg: Any, task: str) -> nn.Module:
        """Return the model to train, with ``requires_grad`` set on exactly the parameters that train."""

    # -- extension points for methods that differentiate other tensors than they update (RGP) --------------------
    def optimizer_params(self, model: nn.Module) -> list[nn.Parameter]:
        """The tensors the optimizer updates. Default: the trainable ones (those the DP engine differentiates)."""
        from privtune.training.dp.engine import unique_trainable

        return unique_trainable(model)

    def before_step(self, model: nn.Module, *, step: int) -> None:
        """Called once per optimizer step ``step`` (1-based), before the first forward pass of its batch."""

    def before_update(self, model: nn.Module) -> None:
        """Called once per step when the trainable parameters hold their final gradients (DP: clipped, noised,
        averaged), before the optimizer steps: a method whose optimizer updates other tensors sets their ``.grad``
        here."""

    def record_fields(self, model: nn.Module) -> dict[str, Any]:
        """Method-specific facts for run.json (merged at the top level)."""
        return {}

    def make_engine(self, model: nn.Module, *, cfg: Any, max_grad_norm: float) -> Any:
        """The per-example gradient engine of a private method (``--dp-engine``); a method with its own DP update
        (e.g. reparametrised gradient perturbation) overrides this."""
        from privtune.training.dp import get_engine

        return get_engine(cfg.dp_engine)(model, max_grad_norm=max_grad_norm)

    def save(self, model: nn.Module, out: Path) -> None:
        """Save in Hugging Face form (``save_pretrained``, safetensors)."""
        model.save_pretrained(out, safe_serialization=True)

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint must hold to restore training (the trainable ones)."""
        return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}

    def load_trainable_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        import torch

        params = dict(model.named_parameters())
        missing = [n for n in state if n not in params]
        if missing:
            raise KeyError(f"checkpoint tensors not in the model: {missing[:3]}")
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t.to(params[n].device))


METHODS: Registry[type[Method]] = Registry("--method")


def get_method(name: str) -> Method:
    return METHODS.get(name)()
