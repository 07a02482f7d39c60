"""RGP (rgp, dp-rgp): carriers, the unchanged forward pass, the projected update computed by hand, per-example carrier
gradients against a brute-force computation, and exact resume."""

import copy
import json
import shutil

import pytest
import torch

from _train_helpers import classification_dataset
from test_dp_engines import check_stats, straddling_clip
from privtune.errors import ConfigError
from privtune.models.loading import load_model
from privtune.training.config import TrainConfig
from privtune.training.dp import get_engine
from privtune.training.dp.engine import EPS, unique_trainable
from privtune.training.losses import per_example_loss
from privtune.training.methods import get_method
from privtune.training.methods.rgp import carrier_generator
from privtune.training.rgp import decompose, project, reconstruct, rgp_layers

SEED = 3


# -- carriers ---------------------------------------------------------------------------------------------------------
def test_decompose_orthonormal_and_recovers_rank_one():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(7, 1, generator=g), torch.randn(5, 1, generator=g)
    left, right = decompose(u @ v.T, rank=1, iters=1, generator=torch.Generator().manual_seed(1))
    assert left.shape == (7, 1) and right.shape == (1, 5)
    assert torch.allclose(left.abs(), (u / u.norm()).abs(), atol=1e-6)
    assert torch.allclose(right.abs(), (v / v.norm()).T.abs(), atol=1e-6)
    m = torch.randn(9, 6, generator=g)
    left, right = decompose(m, rank=3, iters=4, generator=g)
    assert torch.allclose(left.T @ left, torch.eye(3), atol=1e-5)
    assert torch.allclose(right @ right.T, torch.eye(3), atol=1e-5)
    # a zero target still gives orthonormal (if arbitrary) carriers, never NaN
    left, right = decompose(torch.zeros(4, 3), rank=2, iters=1, generator=g)
    assert torch.isfinite(left).all() and torch.allclose(left.T @ left, torch.eye(2), atol=1e-6)


def test_power_iterations_converge_to_the_top_singular_subspace():
    g = torch.Generator().manual_seed(2)
    q1, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    q2, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    s = torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    m = q1[:, :6] @ torch.diag(s) @ q2.T
    left, right = decompose(m, rank=2, iters=30, generator=g)
    # same subspace as the top-2 singular vectors: projectors agree
    assert torch.allclose(left @ left.T, q1[:, :2] @ q1[:, :2].T, atol=1e-4)
    assert torch.allclose(right.T @ right, q2[:, :2] @ q2[:, :2].T, atol=1e-4)


def test_reconstruct_of_exact_carrier_gradients_is_the_projection():
    g = torch.Generator().manual_seed(4)
    left, right = decompose(torch.randn(6, 5, generator=g), rank=2, iters=2, generator=g)
    grad = torch.randn(6, 5, generator=g)
    got = reconstruct(grad @ right.T, left.T @ grad, left, right)
    assert torch.allclose(got, project(grad, left, right), atol=1e-6)
    # a projection: applying it twice changes nothing, and it is the identity on L a^T + b R
    assert torch.allclose(project(got, left, right), got, atol=1e-5)
    inside = left @ torch.randn(2, 5, generator=g) + torch.randn(6, 2, generator=g) @ right
    assert torch.allclose(project(inside, left, right), inside, atol=1e-5)


# -- the model ----------------------------------------------------------------------------------------------------------
def _cls_model(rank=1, carriers="history"):
    torch.manual_seed(0)
    base = load_model("tiny:bert", task="classification", num_labels=2, device="cpu").model
    cfg = TrainConfig(data="x", rgp_rank=rank, rgp_carriers=carriers, seed=SEED)
    method = get_method("dp-rgp")
    model = method.prepare(copy.deepcopy(base), cfg=cfg, task="classification")
    return base, model, method


def _batch(n=4, t=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 500, (n, t), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (n,), generator=g)}


def _no_dropout(*models):
    for m in models:
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0


def test_forward_is_unchanged_bit_for_bit():
    base, model, method = _cls_model(rank=2)
    method.before_step(model, step=1)
    batch = _batch()
    for mode in ("train", "eval"):
        getattr(base, mode)()
        getattr(model, mode)()
        torch.manual_seed(7)  # the same dropout masks: the reparametrization draws no random numbers
        a = per_example_loss(base, batch, task="classification")
        torch.manual_seed(7)
        b = per_example_loss(model, batch, task="classification")
        assert torch.equal(a, b), mode


def test_what_trains_and_what_is_updated():
    _, model, method = _cls_model()
    layers = list(rgp_layers(model))
    assert len(layers) == 12  # 2 blocks x (query, key, value, attention output, intermediate, output)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.endswith((".left.weight", ".right.weight")) or n.startswith("classifier.") for n in names)
    assert {"classifier.weight", "classifier.bias"} <= names
    updated = method.optimizer_params(model)
    assert {id(la.base.weight) for _, la in layers} <= {id(p) for p in updated}
    assert not any(la.left.weight is p or la.right.weight is p for _, la in layers for p in updated)
    assert not any(la.base.weight.requires_grad for _, la in layers)  # frozen for the DP engine


def _full_grads(model, params, batch, reduce_mean=True):
    losses = per_example_loss(model, batch, task="classification")
    return torch.autograd.grad(losses.mean() if reduce_mean else losses.sum(), params)


def _hand_carriers(weights, step, anchors=None):
    """Power iteration by hand (one iteration, rank 1) with the generator the method uses."""
    gen = carrier_generator(SEED, step)
    out = []
    for i, w in enumerate(weights):
        target = w if anchors is None or not bool((w - anchors[i]).any()) else w - anchors[i]
        r0 = torch.randn(w.shape[1], 1, generator=gen)
        left = target @ r0
        left = left / left.norm()
        right = target.T @ left
        right = right / right.norm()
        out.append((left, right.T))
    return out


@pytest.mark.parametrize("engine", [None, "hooks", "ghost"])
def test_one_step_without_noise_or_clipping_is_the_projected_update(engine):
    """Noise 0 and clipping off: W moves by -lr * (L L^T G + G R^T R - L L^T G R^T R), the head by -lr * G."""
    base, model, method = _cls_model()
    _no_dropout(base, model)
    base.train()
    model.train()
    batch, lr = _batch(), 0.1
    names = [n for n, _ in rgp_layers(model)]
    w_base = [base.get_submodule(n).weight for n in names]
    head = [base.classifier.weight, base.classifier.bias]
    grads = _full_grads(base, w_base + head, batch)
    carriers = _hand_carriers([w.detach() for w in w_base], step=1)

    method.before_step(model, step=1)
    params = method.optimizer_params(model)
    before = [p.detach().clone() for p in params]
    if engine is None:
        per_example_loss(model, batch, task="classification").mean().backward()
    else:
        eng = get_engine(engine)(model, max_grad_norm=1e6)
        eng.accumulate(per_example_loss(eng.module, batch, task="classification"))
        sums, stats = eng.take_sum()
        assert stats.n == 4 and stats.n_clipped == 0
        for p, s in zip(eng.params, sums):
            p.grad = s / 4
        eng.close()
    method.before_update(model)
    torch.optim.SGD(params, lr=lr).step()

    moved = {id(p): p.detach() - b for p, b in zip(params, before)}
    for (name, layer), g, (left, right) in zip(rgp_layers(model), grads, carriers):
        assert torch.allclose(layer.left.weight, left, atol=1e-5) or torch.allclose(layer.left.weight, -left,
                                                                                    atol=1e-5), name
        expected = -lr * (left @ (left.T @ g) + (g @ right.T) @ right - left @ (left.T @ g @ right.T) @ right)
        assert torch.allclose(moved[id(layer.base.weight)], expected, atol=1e-6), name
        assert moved[id(layer.base.weight)].abs().max() > 0
    for p, g in zip((model.classifier.weight, model.classifier.bias), grads[-2:]):
        assert torch.allclose(moved[id(p)], -lr * g, atol=1e-6)


def test_second_step_carriers_come_from_the_historical_update():
    _, model, method = _cls_model()
    _no_dropout(model)
    model.train()
    w0 = [la.base.weight.detach().clone() for _, la in rgp_layers(model)]
    method.before_step(model, step=1)
    per_example_loss(model, _batch(), task="classification").mean().backward()
    method.before_update(model)
    torch.optim.SGD(method.optimizer_params(model), lr=0.1).step()
    method.before_step(model, step=2)
    w1 = [la.base.weight.detach() for _, la in rgp_layers(model)]
    for (name, layer), (left, right) in zip(rgp_layers(model), _hand_carriers(w1, step=2, anchors=w0)):
        lw, rw = layer.left.weight.detach(), layer.right.weight.detach()  # the same subspaces (signs are free)
        assert torch.allclose(lw @ lw.T, left @ left.T, atol=1e-5), name
        assert torch.allclose(rw.T @ rw, right.T @ right, atol=1e-5), name
    # `weight` mode decomposes W itself
    _, model2, method2 = _cls_model(carriers="weight")
    assert all(la.anchor is None for _, la in rgp_layers(model2))


@pytest.mark.parametrize("engine", ["hooks", "ghost"])
def test_clipped_per_example_carrier_gradients_match_brute_force(engine):
    """The engine's clipped sum equals carriers' per-example gradients computed one example at a time, each of which
    is the projection onto the carriers of the plain model's per-example weight gradient (dL_i = G_i R^T,
    dR_i = L^T G_i); one norm per example across all carriers and the head."""
    base, model, method = _cls_model(rank=2)
    _no_dropout(base, model)
    base.train()
    model.train()
    method.before_step(model, step=1)
    batch = _batch()
    layers = list(rgp_layers(model))
    params = unique_trainable(model)
    w_base = [base.get_submodule(n).weight for n, _ in layers]
    per_example = []
    for i in range(4):
        one = {k: v[i:i + 1] for k, v in batch.items()}
        grads = torch.autograd.grad(per_example_loss(model, one, task="classification").sum(), params)
        g_plain = _full_grads(base, w_base, one, reduce_mean=False)
        by_id = dict(zip(map(id, params), grads))
        for (_, la), g in zip(layers, g_plain):
            assert torch.allclose(by_id[id(la.left.weight)], g @ la.right.weight.T, atol=1e-6)
            assert torch.allclose(by_id[id(la.right.weight)], la.left.weight.T @ g, atol=1e-6)
        per_example.append(grads)
    norms = torch.stack([torch.sqrt(sum((g ** 2).sum() for g in grads)) for grads in per_example])
    C = straddling_clip(norms)  # clipped and unclipped examples
    total = [torch.zeros_like(p) for p in params]
    for grads, norm in zip(per_example, norms):
        for t, g in zip(total, grads):
            t.add_(g * min(1.0, C / (float(norm) + EPS)))
    eng = get_engine(engine)(model, max_grad_norm=C)
    eng.accumulate(per_example_loss(eng.module, batch, task="classification"))
    sums, stats = eng.take_sum()
    eng.close()
    check_stats(stats, norms, C)
    for p, s, ref in zip(eng.params, sums, total):
        assert torch.allclose(s, ref, atol=1e-6, rtol=1e-4)


# -- bad input ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rank,match", [(0, "--rank"), (33, "at most 32")])
def test_bad_rank_is_refused_before_anything_is_written(tmp_path, rank, match):
    from privtune.training.run import train

    data = classification_dataset(tmp_path / "cls")
    with pytest.raises(ConfigError, match=match):
        train(data=str(data), task="classification", method="dp-rgp", model="tiny:bert", out=tmp_path / "run",
              steps=2, batch_size=4, epsilon=8.0, rgp_rank=rank)
    assert not (tmp_path / "run").exists()


def test_bad_power_iters_and_carriers(tmp_path):
    with pytest.raises(ConfigError, match="--power-iters"):
        TrainConfig(data="x", rgp_power_iters=0).validate()
    with pytest.raises(ConfigError, match="--rgp-carriers"):
        TrainConfig(data="x", rgp_carriers="grad").validate()


# -- runs -----------------------------------------------------------------------------------------------------------
def test_classification_run_records_rgp_and_saves_a_plain_model(tmp_path):
    from privtune.training.run import load_trained, train

    data = classification_dataset(tmp_path / "cls")
    rec = train(data=str(data), task="classification", method="dp-rgp", model="tiny:bert", out=tmp_path / "run",
                steps=3, batch_size=4, max_length=32, epsilon=8.0, rgp_rank=2).record
    assert rec["status"] == "completed" and 0 < rec["epsilon"] <= 8.0 and rec["epsilon_certified"] is True
    assert 0 <= rec["test_accuracy"] <= 1 and 0 <= rec["macro_f1"] <= 1
    r = rec["rgp"]
    assert r["rank"] == 2 and r["layers"] == 12 and r["carriers"] == "history"
    assert rec["trainable_params"] == r["carrier_params"] + 66  # carriers + head (32 x 2 + 2)
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["model_type"] == "bert"
    run = load_trained(tmp_path / "run")
    assert not any("left" in n or "right" in n for n, _ in run.model.named_parameters())
    base = run.load_base()
    enc = run.tokenizer(["great service"], return_tensors="pt")
    with torch.no_grad():
        assert (run.model(**enc).logits - base(**enc).logits).abs().max() > 0


def _weights(run):
    from safetensors.torch import load_file

    return load_file(str(run / "model" / "model.safetensors"))


def test_resume_is_exact(tmp_path):
    """A run stopped after its step-4 checkpoint and resumed ends with the weights of an uninterrupted run."""
    from privtune.training.run import resume, train

    data = classification_dataset(tmp_path / "cls")
    kw = dict(data=str(data), task="classification", method="rgp", model="tiny:bert", steps=6, batch_size=4,
              max_length=32, checkpoint_every=2, lr=5e-3)
    ref = train(**kw, out=tmp_path / "ref")
    run = tmp_path / "run"
    train(**kw, out=run)
    # simulate a crash right after the step-4 checkpoint: later work is lost
    shutil.rmtree(run / "checkpoints" / "step-0000006")
    shutil.rmtree(run / "model")
    rec = json.loads((run / "run.json").read_text())
    rec.update(status="running")
    (run / "run.json").write_text(json.dumps(rec))
    from safetensors.torch import load_file

    ck = load_file(str(run / "checkpoints" / "step-0000004" / "trainable.safetensors"))
    anchors = [k for k in ck if k.endswith(".anchor")]
    assert len(anchors) == 12  # W_0 of every layer travels with the checkpoint
    res = resume(run)
    assert res.record["status"] == "completed" and res.record["resumes"] == 1
    assert res.record["train_loss_curve"] == ref.record["train_loss_curve"]
    a, b = _weights(tmp_path / "ref"), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], load_model("tiny:bert", task="classification", num_labels=2).model
                               .state_dict()[k]) for k in a if k.endswith("query.weight"))


@pytest.mark.parametrize("arch", ["gpt_neox", "llama", pytest.param("gemma", marks=pytest.mark.slow),
                                  pytest.param("qwen2", marks=pytest.mark.slow)])
def test_dp_rgp_on_causal_lms(tmp_path, arch):
    """RGP sits in the trade-off study too: every block linear layer of a causal LM is reparametrized, the (often
    tied) LM head and the embeddings stay frozen, and the run saves a plain causal LM."""
    from _train_helpers import lm_dataset
    from privtune.training.run import load_trained, train

    data = lm_dataset(tmp_path / "cs", n_train=16, n_test=4)
    rec = train(data=str(data), method="dp-rgp", model=f"tiny:{arch}", steps=2, batch_size=4, max_length=32,
                epsilon=8.0, out=tmp_path / "run").record
    assert rec["status"] == "completed" and rec["epsilon"] <= 8.0 and rec["test_loss"] > 0
    assert rec["rgp"]["layers"] >= 8 and rec["rgp"]["full_params"] == []
    assert rec["trainable_params"] == rec["rgp"]["carrier_params"]
    run = load_trained(tmp_path / "run", device="cpu")
    base = run.load_base()
    ids = run.tokenizer(["SYS: How can I help?"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert (run.model(input_ids=ids).logits - base(input_ids=ids).logits).abs().max() > 0


def test_cli_rank_error_is_one_line(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = classification_dataset(tmp_path / "cls")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "PRIVTUNE_PROGRESS": "0"}
    p = subprocess.run([sys.executable, "-m", "privtune", "train", "--data", str(data), "--task", "classification",
                        "--method", "dp-rgp", "--model", "tiny:bert", "--epsilon", "8", "--rank", "40", "--out",
                        str(tmp_path / "run")], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "--rank" in p.stderr and "at most 32" in p.stderr and not (tmp_path / "run").exists()
