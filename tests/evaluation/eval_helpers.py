"""Tiny models and toy records for the evaluation tests.

Models are privtune's tiny random architectures (:mod:`privtune.models.tiny`, with their byte-level BPE
tokenizer); the memorising fixture trains the GPT-NeoX one on a handful of short records plus a repeated
canary until it has learnt them, and keeps the untouched model as its base.
"""

from __future__ import annotations

import copy
import random

import torch
from transformers import AutoModelForCausalLM

from privtune.data.schema import Record, Span
from privtune.models.loading import load_tokenizer
from privtune.models.tiny import build_tiny
from privtune.models.tokenizer import train_bpe

FIRST = "Ada Alan Grace Edsger Barbara Donald Frances John Radia Ken Hedy Tim".split()
LAST = "Lovelace Turing Hopper Dijkstra Liskov Knuth Allen Backus Perlman Thompson".split()


def tiny_tokenizer():
    return load_tokenizer(str(build_tiny("gpt_neox")))


def other_tokenizer(vocab_size: int = 300):
    """A tokenizer that does not belong to the tiny models (for mismatch tests)."""
    rng = random.Random(123)
    texts = [f"Customer {rng.choice(FIRST)} {rng.choice(LAST)} called from {rng.randrange(10**9, 10**10)}."
             for _ in range(200)]
    return train_bpe(texts, vocab_size=vocab_size)


def make_model(tokenizer=None, *, seed: int = 0, arch: str = "gpt_neox"):
    """privtune's tiny random ``arch`` model (gpt_neox, llama, qwen2, gemma), weights drawn from ``seed``."""
    return AutoModelForCausalLM.from_pretrained(str(build_tiny(arch, seed=seed))).eval()


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
