"""`privtune bench`: the contract keys, the memory measure, interleaving, and the scaling plot (tiny sizes)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from privtune.cli import app
from privtune.training.bench import (BenchConfig, _order, packed_batches, resident_bytes, run_bench,
                                     transient_peak_bytes)
from privtune.training.bench_scaling import ScalingConfig, plot_scaling, run_scaling

CONTRACT = ("dp_lora_over_lora_time", "dp_fft_over_fft_time", "dp_fft_over_fft_memory", "dp_lora_over_lora_memory")
TINY = dict(model="tiny:gpt_neox", batch=2, seq=8, rounds=2, warmup=1)


def test_bench_json_has_contract_keys_and_raw_figures():
    res = CliRunner().invoke(app, ["bench", "--json", "--model", "tiny:gpt_neox", "--batch", "2", "--seq", "8",
                                   "--rounds", "2"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    for k in CONTRACT:
        assert d[k] > 0
    for m in ("fft", "lora", "dp-fft", "dp-lora"):
        raw = d["methods"][m]
        assert len(raw["step_s_all"]) == 2 and raw["step_s"] > 0
        assert raw["peak_memory_mb"] == pytest.approx(raw["resident_mb"] + raw["transient_peak_mb"], abs=0.02)
        assert d[f"{m.replace('-', '_')}_step_s"] == raw["step_s"]
    assert d["methods"]["dp-fft"]["dp_engine"] == "bk" and d["methods"]["fft"]["dp_engine"] is None
    # ratios come from the raw figures: memory exactly, time as the median of paired per-round ratios
    assert d["dp_fft_over_fft_memory"] == pytest.approx(d["dp_fft_peak_memory_mb"] / d["fft_peak_memory_mb"],
                                                        rel=1e-3)
    t_dp, t = d["methods"]["dp-lora"]["step_s_all"], d["methods"]["lora"]["step_s_all"]
    h = 5e-5  # step_s_all is rounded to 0.1 ms: bound the ratios over what the rounding hides
    assert min((a - h) / (b + h) for a, b in zip(t_dp, t)) - 1e-3 <= d["dp_lora_over_lora_time"] <= \
        max((a + h) / max(b - h, 1e-9) for a, b in zip(t_dp, t)) + 1e-3
    assert d["methods"]["lora"]["trainable_params"] < d["methods"]["fft"]["trainable_params"]
    # user-level clipping: each DP method again on the same batches, grouped into users (default 4 per user)
    for m in ("dp_fft", "dp_lora"):
        t_u, t_r = d["methods"][m.replace("_", "-") + "-user"]["step_s_all"], d["methods"][m.replace("_", "-")][
            "step_s_all"]
        assert min((a - h) / (b + h) for a, b in zip(t_u, t_r)) - 1e-3 <= d[f"{m}_user_over_record_time"] <= \
            max((a + h) / max(b - h, 1e-9) for a, b in zip(t_u, t_r)) + 1e-3
        assert d[f"{m}_user_over_record_memory"] > 0
    assert d["user_over_record_time"] == max(d["dp_fft_user_over_record_time"], d["dp_lora_user_over_record_time"])


def test_bench_text_and_bad_input():
    res = CliRunner().invoke(app, ["bench", "--model", "tiny:gpt_neox", "--batch", "2", "--seq", "8", "--rounds", "1",
                                   "--warmup", "0", "--no-memory", "--dp-engine", "hooks"])
    assert res.exit_code == 0, res.output
    assert "dp_fft_over_fft_time" in res.output and "engine hooks" in res.output
    from privtune.cli import main

    for args in (["--seq", "1"], ["--dp-engine", "nope"], ["--scaling"]):
        with pytest.raises(SystemExit) as e:
            main(["bench", "--model", "tiny:gpt_neox", *args])
        assert e.value.code == 2


def test_transient_peak_is_the_allocators_running_maximum():
    def work():
        a = torch.ones(1 << 20)          # 4 MiB
        b = torch.ones(1 << 19)          # + 2 MiB: peak 6 MiB
        del a
        c = torch.ones(1 << 19)          # 4 MiB live
        return float(b.sum() + c.sum())

    peak = transient_peak_bytes(work, torch.device("cpu"))
    assert 6 * 2**20 <= peak < 6.1 * 2**20


def test_resident_counts_shared_storage_once():
    lin = torch.nn.Linear(10, 10)
    model = torch.nn.Sequential(lin, lin)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 10)).sum().backward()
    opt.step()
    params = (100 + 10) * 4
    assert resident_bytes(model, opt) == params + 2 * params + 4 * 2  # + exp_avg, exp_avg_sq and two step counters


def test_batches_are_packed_to_the_exact_length():
    from privtune.models.loading import load_tokenizer, resolve_spec

    tok = load_tokenizer(resolve_spec("tiny:gpt_neox"))
    enc = packed_batches(tok, ["hello there", "my order"], batch=3, seq=7, n_batches=2)
    assert len(enc) == 6 and all(len(s) == 7 for s in enc.input_ids)


def test_rounds_interleave_pairs():
    pairs = (("fft", "dp-fft"), ("lora", "dp-lora"))
    seen = [_order(pairs, r) for r in range(4)]
    for order in seen:
        assert sorted(order) == sorted(["fft", "dp-fft", "lora", "dp-lora"])
        for base, dp in pairs:
            assert abs(order.index(base) - order.index(dp)) == 1
    assert len({tuple(o) for o in seen}) == 4  # positions rotate


def test_scaling_writes_plot_and_points(tmp_path):
    sc = ScalingConfig(base=BenchConfig(**{**TINY, "rounds": 1, "warmup": 0}), widths=(16, 32), seqs=(8,),
                       batches=(2,))
    result = run_scaling(sc)
    axes = [(p["axis"], p["value"]) for p in result.points]
    assert axes == [("model", 16), ("model", 32), ("seq", 8), ("batch", 2)]
    assert result.points[0]["params"] < result.points[1]["params"]
    png = plot_scaling(result, tmp_path / "s.png", pairs=sc.base.pairs)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_bench_python_api():
    r = run_bench(BenchConfig(**TINY, memory=False, pairs=(("lora", "dp-lora"),), records_per_user=0))
    assert set(r.methods) == {"lora", "dp-lora"} and r.ratios["dp_lora_over_lora_memory"] is None
    assert "user_over_record_time" not in r.ratios
    assert r.ratios["dp_lora_over_lora_time"] > 0
