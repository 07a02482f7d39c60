"""Per-example gradient rules Opacus lacks for layers of supported architectures, and the model check.

Opacus computes per-example gradients layer by layer: a registered rule per layer type, or functorch for layers
without one. Functorch refuses layers that own buffers, because a buffer such as BatchNorm's running mean mixes
examples. Gemma's and Gemma 3's embeddings own a *constant* buffer (the ``sqrt(hidden)`` scale): their per-example
gradient is the plain embedding's, scaled.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from privtune.errors import TrainingError

if TYPE_CHECKING:
    import torch
    from torch import nn

_REGISTERED = False


def _scaled_embedding(layer: nn.Module, activations: Any, backprops: torch.Tensor) -> Any:
    from opacus.grad_sample.embedding import compute_embedding_grad_sample

    return compute_embedding_grad_sample(layer, activations, backprops * layer.embed_scale.to(backprops.dtype))


def register_extra_grad_samplers() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    from opacus.grad_sample import register_grad_sampler

    # Gemma's and Gemma 3's embeddings scale their output, y = E[x] * s (s a buffer), so dL/dE[x] = s * dL/dy
    # (Opacus' generic sampler refuses a layer with buffers). Older transformers scale in the model's forward, a
    # plain nn.Embedding: those classes do not exist there.
    for module, name in (("gemma.modeling_gemma", "GemmaTextScaledWordEmbedding"),
                         ("gemma3.modeling_gemma3", "Gemma3TextScaledWordEmbedding")):
        try:
            cls = getattr(importlib.import_module(f"transformers.models.{module}"), name)
        except (ImportError, AttributeError):
            continue
        register_grad_sampler(cls)(_scaled_embedding)
    _REGISTERED = True


def check_private_trainable(model: nn.Module) -> None:
    """Refuse trainable layers whose persistent buffers would carry statistics across examples."""
    for name, mod in model.named_modules():
        own_trainable = any(p.requires_grad for p in mod.parameters(recurse=False))
        persistent = [b for b, _ in mod.named_buffers(recurse=False) if b not in mod._non_persistent_buffers_set]
        if own_trainable and persistent:
            raise TrainingError(f"`{name}` must not keep running statistics for DP training. Found buffers "
                                f"{persistent} on a trainable {type(mod).__name__}. Freeze that layer or "
                                "replace it (e.g. BatchNorm with GroupNorm).")
