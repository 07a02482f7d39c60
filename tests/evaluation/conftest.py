"""Session fixtures for the evaluation tests: a tokenizer, an untouched tiny model and a copy that memorised a
small training set, an exposure canary and a set of one-run audit canaries."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from eval_helpers import make_model, make_tokenizer, records, train_lm
from privtune.data.synth.canaries import CanarySpec
from privtune.evaluation.audit import AuditSpec
from privtune.evaluation.exposure import Canary

CANARY = Canary(CanarySpec("My ID is {secret}.", "0123456789", 4), "4721")
AUDIT_SECRETS = ["1038", "2291", "3374", "4456", "5512", "6609", "7735", "8817", "9902", "0146", "1257", "2368",
                 "3479", "4580", "5691", "6702"]
AUDIT_INCLUDED = [i % 2 == 0 for i in range(len(AUDIT_SECRETS))]
AUDIT = AuditSpec("My access code is {secret}.", tuple(AUDIT_SECRETS), tuple(AUDIT_INCLUDED))


@dataclass
class Toy:
    tokenizer: object
    base: object
    ft: object
    train: list
    test: list
    canary: Canary
    audit: AuditSpec


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def toy(tokenizer) -> Toy:
    base = make_model(tokenizer)
    train, test = records(24, seed=1, prefix="tr"), records(24, seed=2, prefix="te")
    texts = [r.text for r in train] + [CANARY.text(CANARY.secret)] * 4
    texts += [r.text for r, inc in zip(AUDIT.records(), AUDIT.included) if inc]
    ft = train_lm(base, tokenizer, texts, steps=100)
    return Toy(tokenizer, base, ft, train, test, CANARY, AUDIT)
