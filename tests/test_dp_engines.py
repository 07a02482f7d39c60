"""Every DP engine's clipped sum equals the brute-force reference: per-example gradients one by one, clipped, summed.

The clipping norm is set between the batch's per-example norms (:func:`straddling_clip`): with every example clipped,
normalisation (``C/||g||`` instead of ``min(1, C/||g||)``) would pass these tests.
"""

import pytest
import torch

from privtune.errors import TrainingError
from privtune.models.loading import load_model
from privtune.models.tiny import LM_ARCHS
from privtune.training.config import TrainConfig
from privtune.training.dp import ENGINES, get_engine
from privtune.training.dp.engine import EPS, unique_trainable
from privtune.training.losses import per_example_loss
from privtune.training.methods import get_method


def _setup(arch, method, seed=0):
    torch.manual_seed(seed)
    lm = load_model(f"tiny:{arch}", device="cpu")
    model = get_method(method).prepare(lm.model, cfg=TrainConfig(lora_r=2), task="lm")
    # make LoRA B non-zero so that A has gradients too
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.train()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 500, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # one padded example
    return model, {"input_ids": ids, "attention_mask": mask}


def _per_example(model, batch, task="lm"):
    """Per-example gradients, one example at a time through plain autograd, and their norms across all trainable
    parameters jointly (one norm per example)."""
    params = unique_trainable(model)
    out, norms = [], []
    for i in range(batch["input_ids"].shape[0]):
        one = {k: v[i:i + 1] for k, v in batch.items()}
        grads = torch.autograd.grad(per_example_loss(model, one, task=task).sum(), params, allow_unused=True)
        grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
        out.append(grads)
        norms.append(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))
    return out, torch.stack(norms)


def straddling_clip(norms) -> float:
    """A clipping norm in the widest gap between the per-example norms, so that the batch has clipped *and* unclipped
    examples: only then does a match with the reference tell ``min(1, C/||g||)`` from normalisation (``C/||g||``),
    from a clip by per-layer norms, or from no clipping at all."""
    s = sorted(float(n) for n in norms)
    k = max(range(1, len(s)), key=lambda i: s[i] / s[i - 1])
    assert s[k] > s[k - 1] * 1.005, f"per-example norms too close to straddle: {s}"
    return (s[k - 1] + s[k]) / 2


def _reference(model, batch, C=None, task="lm"):
    """The brute-force clipped sum ``sum_i g_i min(1, C / (||g_i|| + EPS))``, the per-example norms and ``C``
    (by default :func:`straddling_clip` of the norms)."""
    grads, norms = _per_example(model, batch, task)
    if C is None:
        C = straddling_clip(norms)
    total = [torch.zeros_like(g) for g in grads[0]]
    for gs, norm in zip(grads, norms):
        coef = min(1.0, C / (float(norm) + EPS))
        for t, g in zip(total, gs):
            t.add_(g * coef)
    return total, norms, C


def check_stats(stats, norms, C):
    """The engine's clip statistics against the reference norms (computed independently of the engine)."""
    assert stats.n == len(norms)
    assert stats.n_clipped == int((norms > C).sum()) and 0 < stats.n_clipped < stats.n
    assert stats.norm_max == pytest.approx(float(norms.max()), rel=1e-4)
    assert stats.norm_sum == pytest.approx(float(norms.sum()), rel=1e-4)


@pytest.mark.parametrize("engine", ENGINES.names())  # every registered engine, new ones included
@pytest.mark.parametrize("method", ["dp-fft", "dp-lora"])
@pytest.mark.parametrize("arch", LM_ARCHS)
def test_engine_matches_bruteforce_reference(arch, method, engine):
    model, batch = _setup(arch, method)
    ref, ref_norms, C = _reference(model, batch)
    try:
        eng = get_engine(engine)(model, max_grad_norm=C)
    except TrainingError as e:  # an engine may refuse a model, with a clear error (ghost: tied weights)
        assert engine == "ghost" and arch in ("gemma", "gemma3") and method == "dp-fft" and "tied" in str(e)
        return
    try:
        # two micro-batches of one logical batch
        for sl in (slice(0, 3), slice(3, 4)):
            eng.accumulate(per_example_loss(eng.module, {k: v[sl] for k, v in batch.items()}, task="lm"))
        got, stats = eng.take_sum()
    finally:
        eng.close()
    check_stats(stats, ref_norms, C)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=2e-6)
    # an empty logical batch yields zeros
    assert all(float(t.abs().sum()) == 0 for t in eng.take_sum()[0])


def test_engine_registry_lists_builtins():
    assert {"hooks", "ghost"} <= set(ENGINES.names())


def _classifier(method):
    """BERT classifier, dropout off (so the one-by-one reference sees the same function), 3 labelled examples."""
    torch.manual_seed(0)
    lm = load_model("tiny:bert", task="classification", num_labels=2, device="cpu")
    model = get_method(method).prepare(lm.model, cfg=TrainConfig(lora_r=2), task="classification")
    model.train()  # per-example hooks record activations in training mode only
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    ids = torch.randint(5, 500, (3, 7))
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 1])}


@pytest.mark.parametrize("engine", ENGINES.names())
@pytest.mark.parametrize("method", ["dp-fft", "dp-lora"])
def test_engine_on_classifier_matches_reference(engine, method):
    """BERT classifier: 2-D inputs (pooler, head), position and token-type embeddings, LayerNorm, and (LoRA) the
    head that peft keeps trainable as a modules_to_save copy."""
    model, batch = _classifier(method)
    assert any("classifier" in n for n, p in model.named_parameters() if p.requires_grad)
    ref, ref_norms, C = _reference(model, batch, task="classification")
    eng = get_engine(engine)(model, max_grad_norm=C)
    try:
        eng.accumulate(per_example_loss(eng.module, batch, task="classification"))
        got, stats = eng.take_sum()
    finally:
        eng.close()
    check_stats(stats, ref_norms, C)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
