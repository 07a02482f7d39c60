"""User-level DP training: sampling of users, whole users per micro-batch, one clipped gradient per user in a real
trainer step, the accountant over users, run.json, the group bound of record-level runs, and bad input."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from privtune.accounting import Ledger, get_accountant
from privtune.accounting.group import group_epsilon
from privtune.cli import main
from privtune.data.schema import write_dataset
from privtune.data.synth import generate
from privtune.training.config import TrainConfig
from privtune.training.dp import get_engine
from privtune.training.dp.engine import EPS
from privtune.training.losses import per_example_loss
from privtune.training.randomness import DPRandomness
from privtune.training.sampling import UserPoissonSampler, split_micro_users
from privtune.training.session import build_session, make_plan
from privtune.training.trainer import Trainer

from _train_helpers import lm_dataset
from test_dp_engines import straddling_clip


def user_dataset(out, *, n_train=24, k=3, n_test=4, seed=0, canary_repeats=0):
    splits, info = generate("customersim", n_train=n_train, n_test=n_test, seed=seed, records_per_user=k,
                            canary_repeats=canary_repeats)
    write_dataset(out, splits, info)
    return out


@pytest.fixture(scope="module")
def udata(tmp_path_factory):
    return user_dataset(tmp_path_factory.mktemp("u") / "cs")


# -- sampling and micro-batches ---------------------------------------------------------------------------------
def test_split_micro_users_never_splits_a_user():
    rng = np.random.default_rng(0)
    for _ in range(50):
        sizes = rng.integers(1, 7, size=rng.integers(0, 12))
        users, start = [], 0
        for s in sizes:
            users.append(np.arange(start, start + s))
            start += s
        micro = split_micro_users(users, 5)
        seen = {}
        for idx, groups in micro:
            assert len(idx) <= 5 or groups.max() == 0  # only a user larger than the bound exceeds it, alone
            assert sorted(set(groups.tolist())) == list(range(groups.max() + 1))
            for g in range(groups.max() + 1):
                recs = idx[groups == g]
                owner = {int(np.searchsorted(np.cumsum(sizes), r, side="right")) for r in recs}
                assert len(owner) == 1
                u = owner.pop()
                assert u not in seen  # each user in exactly one micro-batch, whole
                seen[u] = sorted(recs.tolist())
        assert {u: r for u, r in seen.items()} == {u: users[u].tolist() for u in range(len(users))}


def test_user_sampler_samples_users_and_caps_records():
    users = tuple(np.arange(5 * u, 5 * u + 1 + u % 5) for u in range(200))  # 1..5 records each
    s = UserPoissonSampler(users=users, sample_rate=0.1, randomness=DPRandomness.seeded(3), max_records_per_user=2)
    sizes = []
    for t in range(1, 200):
        b = s.batch_users(t)
        sizes.append(len(b))
        for recs in b:
            owner = int(recs[0]) // 5
            assert set(recs.tolist()) <= set(users[owner].tolist()) and len(recs) == min(2, len(users[owner]))
    assert np.mean(sizes) == pytest.approx(s.expected_batch_size, rel=0.1) and s.expected_batch_size == 20
    assert s.expected_records == pytest.approx(0.1 * sum(min(len(u), 2) for u in users))
    # the subset of a capped user changes from draw to draw (drawn, not the first M records)
    subsets = {tuple(r.tolist()) for t in range(1, 200) for r in s.batch_users(t) if int(r[0]) // 5 == 4}
    picks = {tuple(r.tolist()) for t in range(1, 400) for r in s.batch_users(t) if len(users[int(r[0]) // 5]) == 5}
    assert len(picks) > 3 and len(subsets) > 1
    # a fresh secret key gives other batches than the seeded one
    a = UserPoissonSampler(users=users, sample_rate=0.1, randomness=DPRandomness.secret())
    assert any(len(a.batch_users(t)) != len(s.batch_users(t)) for t in range(1, 20))


# -- one trainer step against the brute-force per-user reference ------------------------------------------------
class _Privacy:
    def __init__(self, C):
        self.plan = SimpleNamespace(noise_multiplier=0.0, max_grad_norm=C, secure_rng=False)
        self.draws = 0

    def begin_step(self):
        self.draws += 1
        return self.draws


@pytest.mark.parametrize("engine", ["bk", "hooks", "ghost"])
@pytest.mark.parametrize("arch,method", [("gpt_neox", "dp-lora"), ("llama", "dp-fft")])
def test_user_level_step_equals_bruteforce_update(udata, arch, method, engine):
    lr = 0.5
    cfg = TrainConfig(data=str(udata), method=method, model=f"tiny:{arch}", noise_multiplier=1.0, batch_size=3,
                      max_length=24, steps=1, lora_r=2, dp_engine=engine, eval_test=False, privacy_unit="user")
    plan = make_plan(cfg)
    assert plan.n_units == 8 and plan.sample_rate == pytest.approx(3 / 8)
    s = build_session(plan)
    with torch.no_grad():
        for n, p in s.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    params = s.engine.params
    before = [p.detach().clone() for p in params]
    sampler = UserPoissonSampler(users=s.sampler.users, sample_rate=0.6, randomness=DPRandomness.seeded(2),
                                 max_records_per_user=2)
    users = sampler.batch_users(1, draw=1)
    assert len(users) >= 3 and len(split_micro_users(users, 4)) >= 2 and max(map(len, users)) == 2
    s.engine.close()
    s.model.train()
    sums = []
    for recs in users:  # brute force: each record alone, summed per user
        tot = [torch.zeros_like(p) for p in params]
        for i in recs:
            batch = s.data.collate([i], torch.device("cpu"))
            grads = torch.autograd.grad(per_example_loss(s.model, batch, task="lm").sum(), params, allow_unused=True)
            for t, g in zip(tot, grads):
                if g is not None:
                    t.add_(g)
        sums.append(tot)
    norms = torch.stack([torch.sqrt(sum((g.double() ** 2).sum() for g in t)) for t in sums])
    C = straddling_clip(norms)
    ref = [torch.zeros_like(p) for p in params]
    for t, n in zip(sums, norms):
        for r, g in zip(ref, t):
            r.add_(g * min(1.0, C / (float(n) + EPS)))
    eng = get_engine(engine)(s.model, max_grad_norm=C)
    opt = torch.optim.SGD(params, lr=lr)
    trainer = Trainer(model=s.model, task="lm", data=s.data, sampler=sampler, optimizer=opt,
                      scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0), planned_steps=1,
                      physical_batch_size=4, device=torch.device("cpu"), engine=eng, privacy=_Privacy(C))
    out = trainer.run()
    eng.close()
    assert out.state.clip_n == len(users)  # one clipped unit per user
    assert out.state.clip_clipped == int((norms > C).sum())
    for b, p, r in zip(before, params, ref):
        torch.testing.assert_close(p.detach(), b - lr * r / sampler.expected_batch_size, rtol=1e-4, atol=1e-6)


# -- a whole run: the accountant's N is the number of users -------------------------------------------------------
FAST = ["--model", "tiny:gpt_neox", "--method", "dp-lora", "--max-length", "24", "--steps", "3"]


def _run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_user_level_run_accounts_over_users(udata, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run(["train", "--data", str(udata), *FAST, "--epsilon", "6", "--batch-size", "2",
                         "--privacy-unit", "user", "--max-records-per-user", "2", "--out", str(out)], capsys)
    assert code == 0, err
    rec = json.loads((out / "run.json").read_text())
    assert rec["privacy_unit"] == "user" and rec["n_users"] == 8 and rec["n_train"] == 24
    assert rec["max_records_per_user"] == 2 and rec["max_records_per_user_seen"] == 3
    assert rec["sample_rate"] == pytest.approx(2 / 8) and rec["neighbouring"] == "add_or_remove_one_user"
    ledger = json.loads((out / "ledger.json").read_text())["ledger"]
    assert Ledger.from_dict(ledger).entries[0].sample_rate == pytest.approx(2 / 8)
    want = get_accountant("pld").epsilon(Ledger.of(noise_multiplier=rec["noise_multiplier"], sample_rate=0.25,
                                                   steps=3), delta=rec["delta"]).epsilon
    assert rec["epsilon"] == pytest.approx(want, rel=1e-6) and rec["epsilon"] <= 6
    assert "user_group_epsilon" not in rec
    assert "privacy unit: user" in " ".join(err.split())
    # the trajectory's epochs count users (batch 2 of 8 users: 4 steps per epoch), not records (12 per epoch)
    points = [json.loads(line) for line in (out / "trajectory.jsonl").read_text().splitlines()]
    assert points and points[-1]["step"] == rec["steps"]
    assert points[-1]["epoch"] == pytest.approx(rec["steps"] * 2 / 8)
    assert {p["interval_unit"] for p in points} == {"people"}   # records of one owner are resampled together


def test_record_level_run_on_owned_data_reports_group_bound(udata, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run(["train", "--data", str(udata), *FAST, "--epsilon", "6", "--batch-size", "4", "--out",
                         str(out)], capsys)
    assert code == 0, err
    rec = json.loads((out / "run.json").read_text())
    assert rec["privacy_unit"] == "record" and rec["max_records_per_user_seen"] == 3
    assert rec["user_group_size"] == 3 and rec["user_group_epsilon_kind"] == "bound"
    g = group_epsilon(Ledger.of(noise_multiplier=rec["noise_multiplier"], sample_rate=rec["sample_rate"], steps=3),
                      delta=rec["delta"], group_size=3)
    assert rec["user_group_epsilon"] == pytest.approx(g["epsilon"]) and rec["user_group_epsilon"] > rec["epsilon"]
    assert "group-privacy bound" in " ".join(err.split())


def test_group_bound_of_one_record_is_the_record_epsilon_and_grows_with_k():
    led = Ledger.of(noise_multiplier=1.0, sample_rate=0.05, steps=100)
    eps = get_accountant("pld").epsilon(led, delta=1e-5).epsilon
    g = [group_epsilon(led, delta=1e-5, group_size=k)["epsilon"] for k in (1, 2, 4)]
    assert g[0] == pytest.approx(eps, rel=2e-3)
    assert g[0] < g[1] < g[2]


# -- bad input: one line, exit 2, no run directory ---------------------------------------------------------------
def _refused(argv, tmp_path, capsys, needle):
    out = tmp_path / "bad"
    code, _, err = _run([*argv, "--out", str(out)], capsys)
    assert code == 2, err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_user_level_refused_without_owners(tmp_path, capsys):
    data = lm_dataset(tmp_path / "plain", n_train=12)
    _refused(["train", "--data", str(data), *FAST, "--epsilon", "6", "--batch-size", "2", "--privacy-unit", "user"],
             tmp_path, capsys, "no record naming an owner")


def test_user_level_refused_when_some_records_lack_an_owner(udata, tmp_path, capsys):
    from privtune.data.schema import load_dataset

    ds = load_dataset(udata)
    ds.train[5].meta.pop("user")
    data = tmp_path / "holes"
    write_dataset(data, ds.splits, ds.info)
    _refused(["train", "--data", str(data), *FAST, "--epsilon", "6", "--batch-size", "2", "--privacy-unit", "user"],
             tmp_path, capsys, "1 of 24 records without it")


@pytest.mark.parametrize("extra,needle", [
    (["--privacy-unit", "person"], "--privacy-unit"),
    (["--max-records-per-user", "2"], "--privacy-unit user"),
    (["--privacy-unit", "user", "--max-records-per-user", "0"], "--max-records-per-user"),
    (["--privacy-unit", "user", "--user-key", "nope"], "meta.nope"),
    (["--privacy-unit", "user", "--batch-size", "9"], "at most the number of users (8)"),
    (["--privacy-unit", "user", "--nproc", "2"], "--nproc"),
])
def test_bad_user_options_are_one_line_errors(udata, tmp_path, capsys, extra, needle):
    argv = ["train", "--data", str(udata), *FAST, "--epsilon", "6"]
    if "--batch-size" not in extra:
        argv += ["--batch-size", "2"]
    _refused([*argv, *extra], tmp_path, capsys, needle)


def test_user_level_needs_a_dp_method(udata, tmp_path, capsys):
    _refused(["train", "--data", str(udata), "--model", "tiny:gpt_neox", "--method", "lora", "--steps", "1",
              "--privacy-unit", "user"], tmp_path, capsys, "DP method")


def test_one_user_owning_most_data_warns_with_the_figure(tmp_path, capsys):
    from privtune.data.schema import load_dataset

    ds = load_dataset(user_dataset(tmp_path / "d", n_train=12, k=3))
    for r in ds.train[:9]:
        r.meta["user"] = "whale"
    data = tmp_path / "whale"
    write_dataset(data, ds.splits, ds.info)
    out = tmp_path / "run"
    code, _, err = _run(["train", "--data", str(data), *FAST, "--epsilon", "6", "--batch-size", "2",
                         "--privacy-unit", "user", "--out", str(out)], capsys)
    assert code == 0, err
    rec = json.loads((out / "run.json").read_text())
    assert any("9 of the 12" in w and "75%" in w for w in rec["privacy_warnings"])
    assert "9 of the 12" in " ".join(err.split())


def test_user_sampler_with_secure_rng_caps_records():
    users = tuple(np.arange(10 * u, 10 * u + 10) for u in range(30))
    s = UserPoissonSampler(users=users, sample_rate=0.5, randomness=DPRandomness.secure(), max_records_per_user=3)
    got = [r for t in range(1, 5) for r in s.batch_users(t)]
    assert got and all(len(r) == 3 and len(set(r.tolist())) == 3 and r[0] // 10 == r[-1] // 10 for r in got)
