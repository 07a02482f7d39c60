"""User-level DP: every engine's clipped sum equals the brute-force per-user reference.

Reference: each example's gradient by plain autograd, one at a time; each user's gradients summed; the *sum*
clipped to C as a whole (``min(1, C / (||sum|| + EPS))``); the users' clipped sums added. C lies in the widest gap
between the users' norms (:func:`straddling_clip`), so there are clipped and unclipped users; users own one or
several examples, interleaved in the micro-batch. The users' norms differ from what a per-example norm without
cross terms would give (``sqrt(sum_i ||g_i||^2)``, checked below), so an engine that ignores the cross terms between
a user's examples cannot pass.
"""

import pytest
import torch

from privtune.errors import TrainingError
from privtune.models.tiny import LM_ARCHS
from privtune.training.dp import ENGINES, get_engine
from privtune.training.dp.engine import EPS, check_groups, regroup
from privtune.training.losses import per_example_loss

from test_dp_engines import _classifier, _per_example, _setup, straddling_clip

#: users of the 6 examples: user 0 owns three (interleaved), user 1 one, user 2 two
OWNERS = [0, 1, 0, 2, 0, 2]
#: two micro-batches of whole users: users {0, 1} then {2}, each numbered from 0 within its micro-batch
MICRO = [([0, 1, 2, 4], [0, 1, 0, 0]), ([3, 5], [0, 0])]


def _batch6(arch, method):
    """6 examples; a user's examples are near-copies of each other (a repeat customer's dialogs share most of their
    text), so their gradients are correlated and the cross terms large."""
    model, batch = _setup(arch, method)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, 500, (6, 9), generator=g)
    ids[:2] = batch["input_ids"][:2]
    ids[2], ids[4], ids[5] = ids[0], ids[0], ids[3]
    ids[2, 6:] = torch.randint(3, 500, (3,), generator=g)
    ids[4, :2] = torch.randint(3, 500, (2,), generator=g)
    ids[5, 5:] = torch.randint(3, 500, (4,), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # one padded example
    return model, {"input_ids": ids, "attention_mask": mask}


def user_reference(model, batch, owners, task="lm", C=None):
    """``sum_u clip_C(sum_{i in u} g_i)``, the users' norms, C, and the norms without cross terms."""
    grads, _ = _per_example(model, batch, task)
    users = sorted(set(owners))
    sums = []
    for u in users:
        gs = [grads[i] for i, o in enumerate(owners) if o == u]
        sums.append([sum(parts) for parts in zip(*gs)])
    norms = torch.stack([torch.sqrt(sum((t.float() ** 2).sum() for t in s)) for s in sums])
    no_cross = torch.stack([torch.sqrt(sum(sum((t.float() ** 2).sum() for t in grads[i])
                                           for i, o in enumerate(owners) if o == u)) for u in users])
    if C is None:
        C = straddling_clip(norms)
    total = [torch.zeros_like(t) for t in sums[0]]
    for s, n in zip(sums, norms):
        coef = min(1.0, C / (float(n) + EPS))
        for t, g in zip(total, s):
            t.add_(g * coef)
    return total, norms, C, no_cross


def check_user_stats(stats, norms, C):
    assert stats.n == len(norms)  # one clipped unit per user
    assert stats.n_clipped == int((norms > C).sum()) and 0 < stats.n_clipped < stats.n
    assert stats.norm_sum == pytest.approx(float(norms.sum()), rel=1e-4)
    assert stats.norm_max == pytest.approx(float(norms.max()), rel=1e-4)


def _run(eng, batch, micro, task="lm"):
    try:
        for idx, groups in micro:
            eng.accumulate(per_example_loss(eng.module, {k: v[idx] for k, v in batch.items()}, task=task),
                           torch.tensor(groups))
        return eng.take_sum()
    finally:
        eng.close()


ENGINE_VARIANTS = [(e, {}) for e in ENGINES.names()] + [("bk", {"strategy": s}) for s in ("keep", "ghost", "inst")]


@pytest.mark.parametrize("engine,kw", ENGINE_VARIANTS, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={x}" for k, x in v.items()) or "default")
@pytest.mark.parametrize("method", ["dp-fft", "dp-lora"])
@pytest.mark.parametrize("arch", LM_ARCHS)
def test_user_level_engine_matches_bruteforce_reference(arch, method, engine, kw):
    model, batch = _batch6(arch, method)
    ref, norms, C, no_cross = user_reference(model, batch, OWNERS)
    # the cross terms matter: users of several examples have norms away from sqrt(sum_i ||g_i||^2)
    assert float(((norms - no_cross).abs() / norms).max()) > 0.05
    try:
        eng = get_engine(engine)(model, max_grad_norm=C, **kw)
    except TrainingError as e:  # ghost refuses tied trainable weights (Gemma, full fine-tuning)
        assert engine == "ghost" and arch in ("gemma", "gemma3") and method == "dp-fft" and "tied" in str(e)
        return
    got, stats = _run(eng, batch, MICRO)
    check_user_stats(stats, norms, C)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("engine", ENGINES.names())
@pytest.mark.parametrize("method", ["dp-fft", "dp-lora"])
def test_user_level_on_classifier_matches_reference(engine, method):
    """2-D inputs (pooler, head) and LayerNorm: the users of 3 examples are {0, 2} and {1}."""
    model, batch = _classifier(method)
    ref, norms, C, _ = user_reference(model, batch, [0, 1, 0], task="classification")
    got, stats = _run(get_engine(engine)(model, max_grad_norm=C), batch, [([0, 1, 2], [0, 1, 0])],
                      task="classification")
    check_user_stats(stats, norms, C)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("engine", ENGINES.names())
def test_users_of_one_example_equal_record_level(engine):
    """groups = 0..B-1 is record-level DP exactly."""
    model, batch = _setup("gpt_neox", "dp-lora")
    a = get_engine(engine)(model, max_grad_norm=0.05)
    rec, _ = _run(a, batch, [([0, 1, 2, 3], [0, 1, 2, 3])])
    b = get_engine(engine)(model, max_grad_norm=0.05)
    b.accumulate(per_example_loss(b.module, batch, task="lm"))
    plain, _ = b.take_sum()
    b.close()
    for x, y in zip(rec, plain):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)


def test_regroup_and_group_checks():
    x = torch.arange(5 * 2 * 1, dtype=torch.float32).view(5, 2, 1)
    g = torch.tensor([1, 0, 1, 2, 1])
    y = regroup(x, g, 3)
    assert y.shape == (3, 6, 1)
    assert y[1, :, 0].tolist() == [0, 1, 4, 5, 8, 9]  # user 1's examples 0, 2, 4 in order
    assert y[0, :, 0].tolist() == [2, 3, 0, 0, 0, 0]  # zero padding
    assert check_groups(g, 5) == 3 and check_groups(None, 4) == 4
    for bad in (torch.tensor([0, 2, 0, 2, 0]), torch.tensor([0, 1]), torch.tensor([0.0, 1, 0, 1, 0])):
        with pytest.raises(TrainingError):
            check_groups(bad, 5)
