"""Every DP engine's clipped sum equals the brute-force reference: per-example gradients one by one, clipped, summed."""

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


def _reference(model, batch, C, task="lm"):
    params = unique_trainable(model)
    total = [torch.zeros_like(p) for p in params]
    norms = []
    for i in range(batch["input_ids"].shape[0]):
        one = {k: v[i:i + 1] for k, v in batch.items()}
        grads = torch.autograd.grad(per_example_loss(model, one, task=task).sum(), params, allow_unused=True)
        grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
        norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
        norms.append(norm)
        coef = min(1.0, C / (float(norm) + EPS))
        for t, g in zip(total, grads):
            t.add_(g * coef)
    return total, torch.stack(norms)


@pytest.mark.parametrize("engine", ENGINES.names())  # every registered engine, new ones included
@pytest.mark.parametrize("method", ["dp-fft", "dp-lora"])
@pytest.mark.parametrize("arch", LM_ARCHS)
def test_engine_matches_bruteforce_reference(arch, method, engine):
    model, batch = _setup(arch, method)
    C = 0.5
    ref, ref_norms = _reference(model, batch, C)
    try:
        eng = get_engine(engine)(model, max_grad_norm=C)
    except TrainingError as e:  # an engine may refuse a model, with a clear error (ghost: tied weights)
        assert engine == "ghost" and arch == "gemma" and method == "dp-fft" and "tied" in str(e)
        return
    try:
        # two micro-batches of one logical batch
        for sl in (slice(0, 3), slice(3, 4)):
            eng.accumulate(per_example_loss(eng.module, {k: v[sl] for k, v in batch.items()}, task="lm"))
        got, stats = eng.take_sum()
    finally:
        eng.close()
    assert stats.n == 4 and stats.clipped_norm_max <= C * (1 + 1e-4)
    assert stats.n_clipped == int((ref_norms > C).sum())
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
    ref, _ = _reference(model, batch, 0.1, task="classification")
    eng = get_engine(engine)(model, max_grad_norm=0.1)
    try:
        eng.accumulate(per_example_loss(eng.module, batch, task="classification"))
        got, stats = eng.take_sum()
    finally:
        eng.close()
    assert stats.n == 3
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
