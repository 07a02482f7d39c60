"""Evaluation benchmark: privacy + utility on 1,000 test records and exact canary exposure over 10^6 candidates.

Runs on the embedded default base model's shape — GPT-NeoX, 4 layers, hidden 256, 4 heads, MLP 1024, vocabulary
2048, with a byte-level BPE trained on public synthetic text — and on customersim data (1,000 train + 1,000 test
records, a six-digit canary). Targets: each figure within 60 s on 2 CPU cores. Weights are random unless the
embedded model is available: the cost of scoring does not depend on them.

    python benchmarks/bench_eval.py [--threads 2] [--records 1000] [--json]

Prints one JSON object with the wall times and the rates they come from. Timings on a shared machine are affected
by whatever else runs on it.
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


def embedded_shaped(threads: int):
    """(model, tokenizer, source): the embedded default if privtune provides it, else a random model of its shape."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.set_num_threads(threads)
    try:  # the real embedded base model, once privtune.models.embedded exists
        from privtune.models.embedded import load_embedded  # type: ignore[attr-defined]
        model, tok = load_embedded()
        return model.eval(), tok, "embedded"
    except ImportError:
        pass
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from privtune.data.synth import generate

    splits, _ = generate("customersim", n_train=2000, n_test=0, seed=99, pool="public")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([r.text for r in splits["train"]], trainers.BpeTrainer(
        vocab_size=2048, special_tokens=["<|endoftext|>", "<|pad|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A",
                                                       special_tokens=[("<|endoftext|>", 0)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|pad|>")
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=2048, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=2048, bos_token_id=0, eos_token_id=0)
    return GPTNeoXForCausalLM(cfg).eval(), tok, "random weights, embedded shape"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args()

    from privtune.data.schema import Dataset
    from privtune.data.synth import generate
    from privtune.evaluation import Canary, EvalConfig, canary_exposure, evaluate_models

    model, tok, source = embedded_shaped(args.threads)
    base = copy.deepcopy(model)  # a second model object: the fine-tuned/base pair costs two passes per split
    splits, info = generate("customersim", n_train=args.records, n_test=args.records, seed=0)
    ds = Dataset(info=info, splits=splits)
    n_params = sum(p.numel() for p in model.parameters())

    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate_models(model, base, tok, ds, only="privacy,utility", config=EvalConfig(max_records=None))
    t_pu, c_pu = time.perf_counter() - t0, time.process_time() - c0
    from privtune.evaluation.tokens import encode
    n_tokens = sum(len(e.input_ids) for split in ("train", "test")
                   for e in encode(tok, [r for r in splits[split] if not r.is_canary], max_length=512))

    canary = Canary.from_info(info.canary)
    t0, c0 = time.perf_counter(), time.process_time()
    exp = canary_exposure(model, tok, canary, method="exact")
    t_exp, c_exp = time.perf_counter() - t0, time.process_time() - c0

    out = {
        "model": {"source": source, "params": n_params, "vocab": len(tok)},
        "threads": args.threads, "load_average_1min": round(os.getloadavg()[0], 2),
        "privacy_utility": {"train_records": res["privacy"]["n_train_records"],
                            "test_records": res["privacy"]["n_test_records"], "tokens_scored": 2 * n_tokens,
                            "wall_s": round(t_pu, 2), "cpu_s": round(c_pu, 2),
                            "tokens_per_s": round(2 * n_tokens / t_pu),
                            "target_s": 60, "within_target": t_pu <= 60},
        "exposure_exact": {"candidates": exp.n_scored, "wall_s": round(t_exp, 2), "cpu_s": round(c_exp, 2),
                           "candidates_per_s": round(exp.n_scored / t_exp), "exposure_bits": round(exp.exposure_bits, 3),
                           "target_s": 60, "within_target": t_exp <= 60},
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
