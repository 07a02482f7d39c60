"""The book-keeping engine (``bk``): every per-layer strategy against the brute-force reference, and its edges."""

import pytest
import torch
from torch import nn

from privtune.errors import TrainingError
from privtune.models.loading import load_model
from privtune.models.tiny import LM_ARCHS
from privtune.training.config import TrainConfig
from privtune.training.dp import get_engine
from privtune.training.dp import layers as layers_mod
from privtune.training.dp.engine import EPS, unique_trainable
from privtune.training.dp.layers import choose
from privtune.training.losses import per_example_loss
from privtune.training.methods import get_method
from test_dp_engines import _reference, _setup, check_stats, straddling_clip


def _engine_sum(model, batch, C, *, strategy="auto", splits=((0, 3), (3, 4))):
    eng = get_engine("bk")(model, max_grad_norm=C, strategy=strategy)
    try:
        for a, b in splits:
            eng.accumulate(per_example_loss(eng.module, {k: v[a:b] for k, v in batch.items()}, task="lm"))
        return eng.take_sum()
    finally:
        eng.close()


@pytest.mark.parametrize("strategy", ["keep", "ghost", "inst"])
@pytest.mark.parametrize("method", ["dp-fft", "dp-lora"])
@pytest.mark.parametrize("arch", LM_ARCHS)
def test_every_strategy_matches_reference(arch, method, strategy):
    model, batch = _setup(arch, method)
    ref, ref_norms, C = _reference(model, batch)
    got, stats = _engine_sum(model, batch, C, strategy=strategy)
    check_stats(stats, ref_norms, C)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=2e-6)


def test_chunked_per_example_products_match(monkeypatch):
    monkeypatch.setattr(layers_mod, "CHUNK_ELEMENTS", 50)  # one example per chunk
    model, batch = _setup("gpt_neox", "dp-fft")
    ref, _, C = _reference(model, batch)
    for strategy in ("ghost", "inst"):
        got, _ = _engine_sum(model, batch, C, strategy=strategy)
        for g, r in zip(got, ref):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=2e-6)


def test_padding_token_rows_get_no_gradient():
    """Llama's embedding has a padding index: its row must get no gradient, as autograd gives it none."""
    model, batch = _setup("llama", "dp-fft")
    pad = model.get_input_embeddings().padding_idx
    assert pad is not None
    batch["input_ids"][0, 2] = pad
    batch["input_ids"][2, 5] = pad
    ref, _, C = _reference(model, batch)
    got, _ = _engine_sum(model, batch, C)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=2e-6)


class _Shared(nn.Module):
    """A linear layer applied twice, an embedding, and a custom layer (handled by the generic vmap rule)."""

    class Scale(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.w = nn.Parameter(torch.randn(d))

        def forward(self, x):
            return torch.tanh(x) * (1 + self.w)

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.lin = nn.Linear(6, 6)
        self.scale = self.Scale(6)
        self.head = nn.Linear(6, 3, bias=False)

    def forward(self, ids):
        h = self.emb(ids)
        h = self.lin(torch.relu(self.lin(h)))
        return self.head(self.scale(h)).logsumexp(-1).mean(-1)  # one loss per example


def test_module_used_twice_and_generic_layer_match_reference():
    torch.manual_seed(1)
    model = _Shared()
    ids = torch.randint(0, 11, (5, 4))
    params = unique_trainable(model)
    per_example = [torch.autograd.grad(model(ids[i:i + 1]).sum(), params) for i in range(5)]
    norms = torch.stack([torch.sqrt(sum((g ** 2).sum() for g in grads)) for grads in per_example])
    C = straddling_clip(norms)
    ref = [torch.zeros_like(p) for p in params]
    for grads, norm in zip(per_example, norms):
        for r, g in zip(ref, grads):
            r.add_(g * min(1.0, C / (float(norm) + EPS)))
    for strategy in ("auto", "ghost"):
        eng = get_engine("bk")(model, max_grad_norm=C, strategy=strategy)
        eng.accumulate(model(ids))
        got, stats = eng.take_sum()
        eng.close()
        check_stats(stats, norms, C)
        for g, r in zip(got, ref):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_lora_has_no_per_example_work_on_frozen_layers_and_close_restores():
    model, batch = _setup("qwen2", "dp-lora")
    before = per_example_loss(model, batch, task="lm").detach()
    eng = get_engine("bk")(model, max_grad_norm=1.0)
    assert eng.rules and all("lora_" in r.name for r in eng.rules)
    with torch.no_grad():  # evaluation passes through untouched
        torch.testing.assert_close(per_example_loss(model, batch, task="lm"), before)
    eng.accumulate(per_example_loss(model, batch, task="lm"))
    assert all(p.grad is None for p in model.parameters())  # autograd formed no weight gradient
    eng.close()
    assert not any("forward" in m.__dict__ for m in model.modules())
    torch.testing.assert_close(per_example_loss(model, batch, task="lm").detach(), before)


def test_engine_attached_before_wrapping_is_refused():
    torch.manual_seed(0)
    base = load_model("tiny:llama", device="cpu").model
    stale = get_engine("bk")(base, max_grad_norm=1.0)
    model = get_method("dp-lora").prepare(base, cfg=TrainConfig(lora_r=2), task="lm")  # wraps base in place
    ids = torch.randint(3, 500, (2, 6))
    with pytest.raises(TrainingError, match="bound to other modules"):
        stale.accumulate(per_example_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                                          task="lm"))
    stale.close()


def test_choice_follows_costs():
    # LoRA factors and narrow layers: instantiate and keep; wide layers on short sequences: ghost norms
    assert choose(128, 256, 8) == "keep" and choose(128, 8, 768) == "keep"
    assert choose(128, 256, 1024) == "ghost" and choose(2048, 256, 1024) == "keep"
    assert choose(128, 256, 1024, "inst") == "inst"
    with pytest.raises(TrainingError, match="strategy"):
        get_engine("bk")(nn.Linear(2, 2), max_grad_norm=1.0, strategy="fast")


@pytest.mark.parametrize("arch", ["gemma", "gemma3"])
@pytest.mark.parametrize("strategy", ["auto", "ghost", "inst"])
def test_tied_embedding_and_head_need_no_per_example_instantiation(monkeypatch, arch, strategy):
    """A tied embedding / LM head: the norm of each example's total gradient comes from the two uses' norms and
    their cross term at the example's tokens, never from a (B, vocabulary, width) tensor."""
    from privtune.training.dp import bk as bk_mod

    model, batch = _setup(arch, "dp-fft")
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    batch["input_ids"][0, 4] = batch["input_ids"][0, 1]       # a token twice in one example: one merged row
    batch["input_ids"][2, 3] = batch["input_ids"][1, 3]       # and a token shared by two examples
    ref, ref_norms, C = _reference(model, batch)

    def refuse(*a, **k):
        raise AssertionError("per-example gradients of the tied weight were instantiated")
    monkeypatch.setattr(bk_mod, "to_per_example", refuse)
    got, stats = _engine_sum(model, batch, C, strategy=strategy)
    check_stats(stats, ref_norms, C)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=2e-6)
