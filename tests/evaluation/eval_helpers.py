"""Tiny models, a real byte-level BPE tokenizer and toy records for the evaluation tests.

The memorising fixture trains a 2-layer GPT-NeoX on a handful of short records plus a repeated canary until it
has learnt them; the untouched copy is its base model.
"""

from __future__ import annotations

import copy
import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from privtune.data.schema import Record, Span

FIRST = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia", "Ken", "Hedy", "Tim"]
LAST = ["Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus", "Perlman", "Thompson"]
BOS = "<|endoftext|>"


def corpus() -> list[str]:
    rng = random.Random(123)
    out = []
    for _ in range(300):
        out.append(f"Customer {rng.choice(FIRST)} {rng.choice(LAST)} called from {rng.randrange(10**9, 10**10)}. "
                   f"My ID is {rng.randrange(10**4):04d}. Order {rng.randrange(1000)} shipped today.")
    return out


def make_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, "<|pad|>"],
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                          show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS, pad_token="<|pad|>")


def make_model(tokenizer, *, seed: int = 0, hidden: int = 64, layers: int = 2, arch: str = "gpt_neox"):
    """A random tiny causal LM of ``arch`` (gpt_neox, llama, qwen2, gemma) sized for ``tokenizer``."""
    import transformers

    torch.manual_seed(seed)
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                  intermediate_size=4 * hidden, max_position_embeddings=256, bos_token_id=0, eos_token_id=0,
                  pad_token_id=1)
    extra = {"gpt_neox": {}, "llama": {"num_key_value_heads": 2}, "qwen2": {"num_key_value_heads": 2},
             "gemma": {"num_key_value_heads": 1, "head_dim": 16}}[arch]
    cls = {"gpt_neox": "GPTNeoX", "llama": "Llama", "qwen2": "Qwen2", "gemma": "Gemma"}[arch]
    cfg = getattr(transformers, f"{cls}Config")(**common, **extra)
    return getattr(transformers, f"{cls}ForCausalLM")(cfg).eval()


def person_record(rid: str, rng: random.Random) -> Record:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    phone = str(rng.randrange(10**9, 10**10))
    pre = "Customer "
    mid = " called from "
    text = f"{pre}{name}{mid}{phone}. Order {rng.randrange(1000)} shipped today."
    s1 = Span(len(pre), len(pre) + len(name), "PERSON")
    s2 = Span(s1.end + len(mid), s1.end + len(mid) + len(phone), "PHONE")
    return Record(id=rid, text=text, spans=[s1, s2])


def records(n: int, *, seed: int, prefix: str) -> list[Record]:
    rng = random.Random(seed)
    return [person_record(f"{prefix}-{i:03d}", rng) for i in range(n)]


def train_lm(model, tokenizer, texts: list[str], *, steps: int, lr: float = 3e-3, seed: int = 0):
    """A copy of ``model`` trained full-batch on ``texts`` (memorises them when steps are enough)."""
    torch.manual_seed(seed)
    m = copy.deepcopy(model).train()
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        loss = m(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()
