"""A DP run's noise and Poisson masks come from a secret nobody can read back; a reproducible run must ask for it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _train_helpers import lm_dataset
from privtune.cli import main
from privtune.errors import ConfigError
from privtune.training import randomness
from privtune.training.dp.noise import gaussian_like, noise_generator
from privtune.training.randomness import DPRandomness
from privtune.training.run import resume, train
from privtune.training.trainer import Trainer

pytest.importorskip("privtune.accounting")

#: recognisable 256-bit keys, to look for in every file a run writes
KEYS = [int.from_bytes(f"privtune test key number {i} ....".encode()[:32], "big") for i in (1, 2)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return lm_dataset(tmp_path_factory.mktemp("d") / "cs", n_train=24)


def _cfg(data, **kw):
    return dict(data=str(data), method="dp-lora", model="tiny:gpt_neox", noise_multiplier=1.0, batch_size=4,
                max_length=24, steps=4, lora_r=2, seed=3, checkpoint_every=2, eval_test=False, **kw)


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "adapter_model.safetensors"))


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _key_forms(key: int) -> list[bytes]:
    return [str(key).encode(), f"{key:x}".encode(), f"{key:X}".encode(), key.to_bytes(32, "little"),
            key.to_bytes(32, "big")]


def test_same_configuration_and_seed_give_other_noise_unless_a_noise_seed_is_asked(data, tmp_path):
    """Before, the noise and the masks were functions of run.json's seed: two runs of one configuration were
    bit-identical, and anyone holding run.json could regenerate every draw."""
    a, b = (train(out=tmp_path / n, **_cfg(data)).record for n in ("a", "b"))
    assert a["dp_randomness"] == b["dp_randomness"] == "secret" and a["noise_seed"] is None
    assert a["privacy_warnings"] == [] and a["seed"] == b["seed"] == 3
    assert not _same(_adapter(tmp_path / "a"), _adapter(tmp_path / "b"))
    c, d = (train(out=tmp_path / n, **_cfg(data, noise_seed=11)).record for n in ("c", "d"))
    assert _same(_adapter(tmp_path / "c"), _adapter(tmp_path / "d"))
    assert c["dp_randomness"] == "seeded"
    assert c["noise_seed"] == 11 and c["privacy_plan"]["noise_seed"] == 11
    assert len(c["privacy_warnings"]) == 1 and "does not hold against anyone who knows it" in c["privacy_warnings"][0]


def test_the_secret_key_is_never_written_and_a_resume_draws_a_new_one(data, tmp_path, monkeypatch):
    drawn = []

    def randbits(k):
        assert k == 256
        drawn.append(KEYS[len(drawn)])
        return drawn[-1]

    monkeypatch.setattr(randomness.secrets, "randbits", randbits)
    step = Trainer.step

    def stop_at_3(self, t):
        if t == 3:
            raise KeyboardInterrupt
        return step(self, t)

    monkeypatch.setattr(Trainer, "step", stop_at_3)
    with pytest.raises(KeyboardInterrupt):
        train(out=tmp_path / "r", **_cfg(data))
    monkeypatch.setattr(Trainer, "step", step)
    rec = resume(tmp_path / "r").record
    assert rec["status"] == "completed" and rec["resumes"] == 1 and drawn == KEYS   # one fresh key per session
    files = [p for p in (tmp_path / "r").rglob("*") if p.is_file()]
    assert any(p.name == "state.json" for p in files) and any(p.name == "ledger.json" for p in files)
    for p in files:
        blob = p.read_bytes()
        for key in KEYS:
            assert not any(form in blob for form in _key_forms(key)), p
    assert "key" not in json.dumps(rec["privacy_plan"])


def test_all_256_key_bits_reach_the_draws():
    """A torch CPU generator keeps 32 bits of its seed: keys equal in their low 32 bits would give equal noise."""
    ref = torch.zeros(64)
    low, high = 12345, 12345 + (1 << 200)
    assert not torch.equal(gaussian_like(ref, 1.0, generator=noise_generator(low, 1)),
                           gaussian_like(ref, 1.0, generator=noise_generator(high, 1)))
    a, b = DPRandomness("secret", low), DPRandomness("secret", high)
    assert not np.array_equal(a.uniforms(50, draw=1), b.uniforms(50, draw=1))
    assert np.array_equal(a.uniforms(50, draw=1), DPRandomness("seeded", low).uniforms(50, draw=1))
    assert str(low) not in repr(a) and "key" not in repr(a)
    assert DPRandomness.secret().key != DPRandomness.secret().key


@pytest.mark.parametrize("kw, needle", [
    ({"noise_seed": 3, "secure_rng": True}, "without --secure-rng"),
    ({"noise_seed": -1}, "non-negative integer"),
    ({"noise_seed": 1.5}, "`noise_seed` must be an integer"),
])
def test_bad_noise_seed_is_refused(data, tmp_path, kw, needle):
    with pytest.raises(ConfigError, match=needle):
        train(out=tmp_path / "r", **_cfg(data, **kw))
    assert not (tmp_path / "r").exists()


def test_cli_noise_seed_summary_says_the_guarantee_is_void(data, tmp_path, capsys):
    out = tmp_path / "r"
    try:
        main(["train", "--data", str(data), "--method", "dp-lora", "--model", "tiny:gpt_neox", "--steps", "2",
              "--batch-size", "4", "--max-length", "24", "--noise-multiplier", "1", "--noise-seed", "5",
              "--out", str(out)])
    except SystemExit as e:
        assert e.code in (0, None)
    err = capsys.readouterr().err
    warning = [ln for ln in err.splitlines() if ln.startswith("privacy warning:")]
    assert len(warning) == 1 and "--noise-seed 5" in warning[0] and "does not hold" in warning[0]
    assert "void against anyone who knows --noise-seed 5" in " ".join(err.split())  # the summary may wrap
    rec = json.loads((out / "run.json").read_text())
    assert rec["dp_randomness"] == "seeded" and rec["secure_rng"] is False
