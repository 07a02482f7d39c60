"""Evaluation benchmark: privacy + utility on 1,000 test records, exact canary exposure over 10^6 candidates.

Runs on the embedded default base model — GPT-NeoX, 4 layers, hidden 256, 4 heads, MLP 1024, vocabulary 2048,
with its byte-level BPE (built and cached on first use; ``--model random`` takes a random model of that shape)
— and on customersim data (1,000 train + 1,000 test records, a six-digit canary). Target: each figure within
60 s on 2 CPU cores. The same model plays fine-tuned and base: the cost of scoring does not depend on the
weights.

    python benchmarks/bench_eval.py [--threads 2] [--records 1000] [--model embedded|random] [--json]

Prints one JSON object with wall and CPU times: privacy + utility cold (fine-tuned and base model over train
and test: 4 passes), again with the base model's scores from the evaluation cache (2 passes, as for every run
of a sweep after the first), utility alone (test split, 2 passes), and exact exposure of one model over 10^6
candidates. Timings on a shared machine are affected by whatever else runs on it (the load average is
printed).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("PRIVTUNE_PROGRESS", "0")


def embedded_shaped(threads: int, which: str = "embedded"):
    """(model, tokenizer, source): privtune's embedded default base model (built and cached on first use), or
    a random model of its shape with a BPE trained on public synthetic text (``which="random"``)."""
    import torch

    torch.set_num_threads(threads)
    if which == "embedded":
        from privtune.models.loading import load_model

        lm = load_model("embedded")
        return lm.model.eval(), lm.tokenizer, "embedded (privtune.models.embedded, default size)"
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from privtune.data.synth import generate
    from privtune.models.tokenizer import train_bpe

    splits, _ = generate("customersim", n_train=2000, n_test=0, seed=99, pool="public")
    tok = train_bpe([r.text for r in splits["train"]], vocab_size=2048)
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id)
    return GPTNeoXForCausalLM(cfg).eval(), tok, "random weights, embedded shape"


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, round(time.perf_counter() - t0, 2), round(time.process_time() - c0, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--model", choices=["embedded", "random"], default="embedded")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args()

    import tempfile

    from privtune.data.schema import Dataset
    from privtune.data.synth import generate
    from privtune.evaluation import Canary, EvalConfig, canary_exposure, evaluate_models
    from privtune.evaluation.tokens import encode

    model, tok, source = embedded_shaped(args.threads, args.model)
    base = copy.deepcopy(model)  # a second model object: a fine-tuned/base pair costs two passes per split
    os.environ["PRIVTUNE_CACHE"] = tempfile.mkdtemp(prefix="privtune-bench-eval-")  # empty evaluation cache
    splits, info = generate("customersim", n_train=args.records, n_test=args.records, seed=0)
    ds = Dataset(info=info, splits=splits)
    n_tokens = {}
    for split in ("train", "test"):
        enc = encode(tok, [r for r in splits[split] if not r.is_canary], max_length=512)
        n_tokens[split] = sum(len(e.input_ids) for e in enc)
    pu = dict(only="privacy,utility", config=EvalConfig(max_records=None))
    # cold: 4 passes (fills the cache); warm: the base model's scores come from the cache
    cold, t_cold, c_cold = _timed(lambda: evaluate_models(model, base, tok, ds, **pu))
    _, t_warm, c_warm = _timed(lambda: evaluate_models(model, base, tok, ds, **pu))
    _, t_util, c_util = _timed(lambda: evaluate_models(
        model, base, tok, ds, only="utility", config=EvalConfig(max_records=None, cache_base=False)))
    canary = Canary.from_info(info.canary)
    exp, t_exp, c_exp = _timed(lambda: canary_exposure(model, tok, canary, method="exact"))

    all_tokens = 2 * (n_tokens["train"] + n_tokens["test"])
    out = {
        "model": {"source": source, "params": sum(p.numel() for p in model.parameters()), "vocab": len(tok)},
        "threads": args.threads, "load_average_1min": round(os.getloadavg()[0], 2),
        "records": {"train": cold["privacy"]["n_train_records"], "test": cold["privacy"]["n_test_records"],
                    "tokens_train": n_tokens["train"], "tokens_test": n_tokens["test"]},
        "privacy_utility_cold": {"passes": 4, "tokens_scored": all_tokens, "wall_s": t_cold, "cpu_s": c_cold,
                                 "tokens_per_s": round(all_tokens / t_cold)},
        "privacy_utility_base_cached": {"passes": 2, "wall_s": t_warm, "cpu_s": c_warm},
        "utility_only_test": {"passes": 2, "wall_s": t_util, "cpu_s": c_util},
        "exposure_exact": {"candidates": exp.n_scored, "wall_s": t_exp, "cpu_s": c_exp,
                           "candidates_per_s": round(exp.n_scored / t_exp),
                           "exposure_bits": round(exp.exposure_bits, 3)},
        "target_s": 60,
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
