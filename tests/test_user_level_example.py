"""examples/user-level.toml: the record- vs user-level study stays valid and compares like with like."""

from pathlib import Path

from privtune.experiments.config import load_study

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "user-level.toml"


def test_example_pairs_each_dp_method_with_both_units_at_one_rate():
    study = load_study(EXAMPLE)
    runs = study.expand()
    assert sorted((r.method, r.privacy_unit, r.epsilon) for r in runs) == [
        ("dp-fft", "record", 8), ("dp-fft", "user", 8), ("dp-lora", "record", 8), ("dp-lora", "user", 8)]
    ds = study.datasets["repeat-customers"].options
    k = ds["records_per_user"]
    assert k > 1 and ds["canary_repeats"] == k          # the canary's owner is a customer like the others
    for r in runs:
        cfg = r.train_config("/d")
        assert cfg["privacy_unit"] == r.privacy_unit and cfg["epsilon"] == 8
        n = ds["train"] if r.privacy_unit == "record" else ds["train"] // k + 1   # + the canary's owner
        q = cfg["batch_size"] / n
        assert abs(q - 256 / 800) < 0.005, (r.run_id, q)
    assert "users" in study.eval["only"]
    assert len({r.run_id for r in runs}) == 4
