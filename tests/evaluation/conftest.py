"""Session fixtures for the evaluation tests: the tiny models' tokenizer, an untouched tiny GPT-NeoX and a
copy that memorised a small training set, an exposure canary and a set of one-run audit canaries."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pytest

from eval_helpers import make_model, records, tiny_tokenizer, train_lm
from privtune.data.synth.canaries import CanarySpec
from privtune.evaluation.audit import AuditSpec
from privtune.evaluation.exposure import Canary

CANARY = Canary(CanarySpec("My ID is {secret}.", "0123456789", 4), "4721")
AUDIT_SECRETS = ("1038 2291 3374 4456 5512 6609 7735 8817 9902 0146 1257 2368 3479 4580 5691 6702").split()
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
def _session_cache(tmp_path_factory):
    """Session fixtures build tiny models before the per-test cache fixture runs: point them there too."""
    mp = pytest.MonkeyPatch()
    shared = os.environ.get("PRIVTUNE_TEST_CACHE")
    mp.setenv("PRIVTUNE_CACHE", shared or str(tmp_path_factory.getbasetemp() / "cache"))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tokenizer(_session_cache):
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def toy(tokenizer, _session_cache) -> Toy:
    base = make_model(tokenizer)
    train, test = records(24, seed=1, prefix="tr"), records(24, seed=2, prefix="te")
    texts = [r.text for r in train] + [CANARY.text(CANARY.secret)] * 4
    texts += [r.text for r, inc in zip(AUDIT.records(), AUDIT.included) if inc]
    ft = train_lm(base, tokenizer, texts, steps=150, lr=5e-3)
    return Toy(tokenizer, base, ft, train, test, CANARY, AUDIT)


@pytest.fixture
def transformers_warnings():
    """The warnings transformers logs during the test. transformers logs most deprecations once per process
    (``warning_once``, an lru_cache): its cache is cleared first, so a warning an earlier test triggered counts."""
    from transformers.utils import logging as hf_logging

    hf_logging.warning_once.cache_clear()
    seen: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                seen.append(record.getMessage())

    handler, logger = _Collect(), logging.getLogger("transformers")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)
