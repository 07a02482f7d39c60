"""What every DP engine refuses before clipping: parameters used outside the modules it captures, and layers that
mix examples (:mod:`privtune.training.dp.checks`)."""

import pytest
import torch
from torch import nn

from privtune.errors import TrainingError
from privtune.training.dp import ENGINES, get_engine
from privtune.training.dp.engine import EPS, unique_trainable
from test_dp_engines import check_stats, straddling_clip

V, D = 11, 6


class _TinyLM(nn.Module):
    """Embedding, a hidden layer, and logits from the embedding matrix: through an ``nn.Linear`` head that shares the
    embedding's weight (``tied``, what Hugging Face models do), or as ``h @ emb.weight.T`` (``outside``). One loss per
    example."""

    def __init__(self, head: str):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.lin = nn.Linear(D, D)
        self.head_kind = head
        if head == "tied":
            self.head = nn.Linear(D, V, bias=False)
            self.head.weight = self.emb.weight

    def forward(self, ids):
        h = torch.tanh(self.lin(self.emb(ids)))
        logits = self.head(h) if self.head_kind == "tied" else h @ self.emb.weight.T
        return (logits.logsumexp(-1) - logits[..., 0]).mean(-1)


def _ids(n=6):
    return torch.randint(0, V, (n, 5), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("engine", ENGINES.names())
def test_weight_used_outside_its_module_is_refused(engine):
    """``h @ emb.weight.T``: the engines see the embedding's use, not the product's; that part of the gradient would
    escape clipping."""
    torch.manual_seed(0)
    model = _TinyLM("outside").train()
    eng = get_engine(engine)(model, max_grad_norm=1.0)
    try:
        with torch.no_grad():  # evaluation passes are not checked and do not use up the check
            model(_ids())
        with pytest.raises(TrainingError, match=r"^`emb.weight` must be used only through the module that owns it.*"
                                                r"Found '`T` on it outside that module'.*head.weight = emb.weight"):
            eng.accumulate(eng.module(_ids()))
    finally:
        eng.close()


@pytest.mark.parametrize("engine", ENGINES.names())
def test_weight_tied_through_modules_matches_reference(engine):
    """The same tied weight used through an ``nn.Linear`` head is captured: the engines' clipped sums match the
    brute-force reference (ghost refuses tied weights)."""
    torch.manual_seed(0)
    model = _TinyLM("tied").train()
    ids = _ids()
    params = unique_trainable(model)
    assert len(params) == 3  # emb/head weight once, lin weight and bias
    per_example = [torch.autograd.grad(model(ids[i:i + 1]).sum(), params) for i in range(len(ids))]
    norms = torch.stack([torch.sqrt(sum((g ** 2).sum() for g in grads)) for grads in per_example])
    C = straddling_clip(norms)
    ref = [sum(g[j] * min(1.0, C / (float(n) + EPS)) for g, n in zip(per_example, norms)) for j in range(3)]
    if engine == "ghost":
        with pytest.raises(TrainingError, match="tied"):
            get_engine(engine)(model, max_grad_norm=C)
        return
    eng = get_engine(engine)(model, max_grad_norm=C)
    try:
        eng.accumulate(eng.module(ids))
        got, stats = eng.take_sum()
    finally:
        eng.close()
    check_stats(stats, norms, C)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_bk_refuses_a_gradient_that_bypasses_its_layers_after_the_first_step():
    """The first-pass check sees one forward pass; ``bk`` also refuses, at every step, a gradient that reaches a linear
    or embedding weight outside its layer (autograd gives those weights none of their own)."""
    torch.manual_seed(0)
    model = _TinyLM("tied").train()
    eng = get_engine("bk")(model, max_grad_norm=1.0)
    try:
        eng.accumulate(eng.module(_ids()))  # first pass: clean
        model.head_kind = "outside"          # later passes: the product bypasses the head
        with pytest.raises(TrainingError, match="^`emb.weight` must be used only through the module"):
            eng.accumulate(eng.module(_ids()))
    finally:
        eng.close()


class _Net(nn.Module):
    def __init__(self, norm: nn.Module, *, freeze_norm: bool):
        super().__init__()
        self.inp, self.norm, self.out = nn.Linear(4, 8), norm, nn.Linear(8, 1)
        for p in self.norm.parameters():
            p.requires_grad_(not freeze_norm)

    def forward(self, x):  # (B, 4) -> 4 channels of length 2 -> one loss per example
        return self.out(self.norm(self.inp(x).view(-1, 4, 2)).flatten(1)).squeeze(-1)


@pytest.mark.parametrize("engine", ENGINES.names())
@pytest.mark.parametrize("norm,frozen,match", [
    (lambda: nn.BatchNorm1d(4), True,
     "`norm` must be free of layers that mix examples.*Found 'BatchNorm1d'.*GroupNorm"),
    (lambda: nn.BatchNorm1d(4), False, "`norm` must be free of layers that mix examples"),
    (lambda: nn.BatchNorm1d(4, affine=False), True, "Found 'BatchNorm1d'"),  # no parameters at all
    (lambda: nn.SyncBatchNorm(4), True, "Found 'SyncBatchNorm'"),
    (lambda: nn.InstanceNorm1d(4, track_running_stats=True), True, "`norm` must be free of running statistics"),
])
def test_layers_that_mix_examples_are_refused(engine, norm, frozen, match):
    """BatchNorm normalises each example by the batch's statistics in training mode (where the trainer runs the
    model), whether its affine parameters train or not."""
    with pytest.raises(TrainingError, match=match):
        get_engine(engine)(_Net(norm(), freeze_norm=frozen).train(), max_grad_norm=1.0)


@pytest.mark.parametrize("engine", ENGINES.names())
def test_per_example_norm_layers_are_accepted(engine):
    for norm in (nn.GroupNorm(2, 4), nn.InstanceNorm1d(4)):
        model = _Net(norm, freeze_norm=True).train()
        eng = get_engine(engine)(model, max_grad_norm=1.0)
        eng.accumulate(eng.module(torch.randn(3, 4)))
        assert eng.take_sum()[1].n == 3
        eng.close()
