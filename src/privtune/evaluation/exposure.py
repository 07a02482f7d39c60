"""Canary exposure (Carlini et al. 2019, "The Secret Sharer", USENIX Security).

A canary is a record ``template.format(secret=s*)`` inserted into the training data, with ``s*`` drawn
uniformly from a candidate space ``C`` (e.g. all 10^6 six-digit strings). Rank every candidate ``s ∈ C`` by
the model's likelihood of the secret in the canary's context and let ``rank(s*)`` be the canary's position (1
= most likely):

    exposure(s*) = log2 |C| − log2 rank(s*)            [bits; 0 ≤ exposure ≤ log2 |C|]

A model that never saw the canary gives an expected exposure of about log2(e) ≈ 1.44 bits; a model that ranks
it first reaches the maximum, log2 |C| (19.93 bits for 10^6 candidates).

**Likelihood of a candidate.** ``score(s) = Σ_t ln p(x_t | x_{<t})`` (nats) over the tokens covering a window
of characters around the secret: the word before it and, only if the tokenizer merges the secret with what
follows, the text up to the next word after it. The window is the narrowest one for which every probed
candidate's tokenization is ``tokens(text before the window) + tokens(window) + ...``; the text before it is
the shared context. Every candidate is scored over the same characters, and multi-digit tokens are handled
honestly: each candidate window is tokenized by the model's own tokenizer and the windows' token sequences are
scored exactly through a prefix tree (:mod:`privtune.evaluation.trie`). Ties count in the canary's favour
(``rank = 1 + #{s : score(s) > score(s*)}``).

**Extrapolation** (Secret Sharer §4.3) for spaces too large to enumerate: score ``n`` candidates sampled
uniformly, fit a skew-normal distribution ``F`` to their log-perplexities ``−score(s)``, and estimate
``exposure ≈ −log2 F(−score(s*))`` — an *estimate*, labelled so.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import stats

from privtune.data.synth.canaries import CanarySpec
from privtune.errors import ConfigError, DataError, fmt
from privtune.evaluation.trie import pad_sequences, sequence_logprobs

SECRET = "{secret}"
DEFINITIONS = {
    "exposure_bits": "log2|C| - log2 rank of the inserted canary secret among all candidates C, ranked by "
                     "the model's likelihood of the secret in the canary's context (Carlini et al. 2019); "
                     "bits",
    "max_exposure_bits": "log2|C|: the exposure of a canary ranked first",
    "rank": "1 + number of candidates more likely than the canary (exact method only)",
    "method": "exact: every candidate scored through a prefix tree; extrapolated: skew-normal fit to sampled "
              "candidates' log-perplexities (an estimate)",
    "extrapolated_exposure_bits": "estimate of the exposure from the skew-normal fit (Secret Sharer "
                                  "sec. 4.3); "
                                  "beside an exact figure it is a check of the fit",
    "exposure_bits_base": "the same canary under the base model (never trained on it): the chance level",
}


@dataclass(frozen=True)
class Canary:
    """The inserted canary: its template and candidate space (the data package's :class:`CanarySpec`) and the
    secret that was planted."""

    spec: CanarySpec
    secret: str

    def __post_init__(self) -> None:
        if len(self.secret) != self.spec.length or any(c not in self.spec.alphabet for c in self.secret):
            raise DataError(fmt("canary.secret", f"{self.spec.length} characters from the canary alphabet",
                                f"{len(self.secret)} characters", "Regenerate the dataset."))

    @property
    def n_candidates(self) -> int:
        return self.spec.candidates

    @property
    def prefix(self) -> str:
        return self.spec.template.split(SECRET)[0]

    @property
    def suffix(self) -> str:
        return self.spec.template.split(SECRET)[1]

    def text(self, secret: str) -> str:
        return self.prefix + secret + self.suffix

    def index(self) -> int:
        """Position of the secret in the lexicographic enumeration (:meth:`CanarySpec.secret_at`'s order)."""
        idx = 0
        for ch in self.secret:
            idx = idx * len(self.spec.alphabet) + self.spec.alphabet.index(ch)
        return idx

    @classmethod
    def from_info(cls, canary: dict[str, Any] | None) -> "Canary":
        """From ``dataset.json``'s ``canary`` object (template, alphabet, length, candidates, secret, ...)."""
        missing = [k for k in ("template", "secret", "alphabet", "length") if k not in (canary or {})]
        if missing:
            raise DataError(fmt("dataset.json `canary`",
                                "an object with template, secret, alphabet and length",
                                f"missing {missing}" if canary else None,
                                "Generate the data with a canary "
                                "(`privtune data synth ... --canary-repeats 10`)."))
        try:
            spec = CanarySpec.from_dict(canary)
        except ConfigError as e:
            raise DataError(str(e)) from None
        n = canary.get("candidates")
        if isinstance(n, int) and not isinstance(n, bool) and n != spec.candidates:
            raise DataError(fmt("canary.candidates", f"alphabet ** length = {spec.candidates}", n))
        return cls(spec, str(canary["secret"]))


@dataclass
class ExposureResult:
    exposure_bits: float
    max_exposure_bits: float
    method: str                           # "exact" | "extrapolated"
    n_candidates: int
    n_scored: int
    rank: int | None = None
    extrapolated_exposure_bits: float | None = None
    canary_logprob: float | None = None   # nats over the scored window
    exposure_bits_base: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {"definition": DEFINITIONS, "exposure_bits": self.exposure_bits,
             "max_exposure_bits": self.max_exposure_bits, "rank": self.rank, "method": self.method,
             "estimate": self.method != "exact", "n_candidates": self.n_candidates, "n_scored": self.n_scored,
             "extrapolated_exposure_bits": self.extrapolated_exposure_bits,
             "canary_logprob_nats": self.canary_logprob}
        if self.exposure_bits_base is not None:
            d["exposure_bits_base"] = self.exposure_bits_base
        if self.notes:
            d["notes"] = self.notes
        return d


# --- tokenization window
# -------------------------------------------------------------------------------------

def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _leading_specials(tokenizer: Any, text: str) -> list[int]:
    enc = tokenizer(text, add_special_tokens=True, return_special_tokens_mask=True)
    lead = []
    for i, sp in zip(enc["input_ids"], enc["special_tokens_mask"]):
        if not sp:
            break
        lead.append(i)
    return lead


def _cuts(prefix: str, suffix: str) -> tuple[list[int], list[int]]:
    """Left cuts (start of the word before the secret, then of earlier words, then 0) and right cuts (none,
    then the ends of the following words), each from narrow to wide."""
    left, pos = [], len(prefix.rstrip())
    while pos > 0:
        pos = max(prefix.rfind(" ", 0, pos), 0)
        left.append(pos)
    right = [0] + [i for i, ch in enumerate(suffix) if ch.isspace() and i > 0] + [len(suffix)]
    return left or [0], sorted(set(right))


def _probe_secrets(canary: Canary, rng: np.random.Generator, n: int = 48) -> list[str]:
    a, L = canary.spec.alphabet, canary.spec.length
    probes = {canary.secret} | {ch * L for ch in a[:16]} | {a[-1] * L}
    probes |= {"".join(rng.choice(list(a), L)) for _ in range(n)}
    return sorted(probes)


def _splits_at(full: list[int], ctx: list[int], window: list[int]) -> bool:
    """True when the full text's tokens are ``ctx + window + ...``."""
    n = len(ctx)
    return bool(window) and full[:n] == ctx and full[n:n + len(window)] == window


@dataclass(frozen=True)
class Window:
    """What is scored: ``left + secret + right`` after the fixed ``context_ids``."""

    context_ids: list[int]
    left: str
    right: str


def find_window(tokenizer: Any, canary: Canary, *, seed: int = 0) -> Window:
    """The narrowest window around the secret that tokenizes independently of the text outside it, checked on
    probe secrets (the canary, constant strings and random ones)."""
    prefix, suffix = canary.prefix, canary.suffix
    probes = _probe_secrets(canary, np.random.default_rng(seed))
    full = {s: _ids(tokenizer, canary.text(s), True) for s in probes}
    lefts, rights = _cuts(prefix, suffix)
    for cl in lefts:
        ctx = _leading_specials(tokenizer, prefix) + (_ids(tokenizer, prefix[:cl], False) if cl else [])
        for cr in rights:
            left, right = prefix[cl:], suffix[:cr]
            if all(_splits_at(full[s], ctx, _ids(tokenizer, left + s + right, False)) for s in probes):
                if not ctx:  # the first token needs a context to be predicted
                    bos = tokenizer.bos_token_id
                    bos = bos if bos is not None else tokenizer.eos_token_id
                    if bos is None:
                        raise ConfigError(fmt("tokenizer", "one with a BOS or EOS token when the canary text "
                                              "starts with the secret", "neither"))
                    ctx = [bos]
                return Window(ctx, left, right)
    raise DataError(fmt("canary.template", "a text whose tokenization around the secret does not depend on "
                        "it", "a template the tokenizer merges across the whole text",
                        "Put spaces around {secret}."))


def tokenize_windows(tokenizer: Any, window: Window, secrets: Sequence[str], *,
                     chunk: int = 100_000) -> np.ndarray:
    """Token ids of ``left + secret + right`` for every secret (Rust backend, in chunks, no specials)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    rows: list[list[int]] = []
    for lo in range(0, len(secrets), chunk):
        texts = [window.left + s + window.right for s in secrets[lo:lo + chunk]]
        if backend is not None:
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
            rows.extend(e.ids for e in encode(texts, add_special_tokens=False))
        else:  # pragma: no cover - slow tokenizers
            rows.extend(tokenizer(texts, add_special_tokens=False)["input_ids"])
    return pad_sequences(rows)


def all_secrets(spec: CanarySpec) -> list[str]:
    """Every candidate, in lexicographic order of the alphabet (the order of :meth:`CanarySpec.secret_at`)."""
    return ["".join(p) for p in itertools.product(spec.alphabet, repeat=spec.length)]


def sample_secrets(spec: CanarySpec, n: int, rng: np.random.Generator) -> list[str]:
    chars = np.array(list(spec.alphabet))
    return ["".join(row) for row in chars[rng.integers(0, len(chars), size=(n, spec.length))]]


# --- exposure
# ------------------------------------------------------------------------------------------------

def exposure_from_rank(rank: int, n_candidates: int) -> float:
    """``log2 |C| − log2 rank``."""
    return math.log2(n_candidates) - math.log2(rank)


def extrapolated_exposure(sample_scores: np.ndarray, canary_score: float) -> float:
    """``−log2 F(−canary_score)`` with ``F`` a skew-normal fitted to the sampled candidates' log-perplexities
    ``−score`` (Carlini et al. 2019, §4.3). An estimate."""
    x = -np.asarray(sample_scores, float)
    a, loc, scale = stats.skewnorm.fit(x)
    logcdf = float(stats.skewnorm.logcdf(-canary_score, a, loc, scale))
    return max(0.0, -logcdf / math.log(2))


def canary_exposure(model: Any, tokenizer: Any, canary: Canary, *, method: str = "auto",
                    max_exact: int = 2_000_000, n_samples: int = 10_000, seed: int = 0,
                    batch_size: int | None = None, description: str = "exposure") -> ExposureResult:
    """Exposure of ``canary.secret`` under ``model`` (see the module docstring).

    ``method``: ``"exact"`` enumerates all candidates, ``"extrapolated"`` fits a skew-normal to ``n_samples``
    sampled ones, ``"auto"`` is exact when ``|C| <= max_exact``.
    """
    if method not in ("auto", "exact", "extrapolated"):
        raise ConfigError(fmt("method", "one of auto, exact, extrapolated", method))
    n_cand = canary.n_candidates
    exact = method == "exact" or (method == "auto" and n_cand <= max_exact)
    rng = np.random.default_rng(seed)
    window = find_window(tokenizer, canary, seed=seed)
    if exact:
        secrets, canary_idx = all_secrets(canary.spec), canary.index()
    else:
        secrets, canary_idx = [canary.secret] + sample_secrets(canary.spec, n_samples, rng), 0
    seqs = tokenize_windows(tokenizer, window, secrets)
    scores = sequence_logprobs(model, context_ids=window.context_ids, sequences=seqs, batch_size=batch_size,
                               description=description)
    s_star = float(scores[canary_idx])
    others = np.delete(scores, canary_idx)
    if exact:
        rank = 1 + int((scores > s_star).sum())
        sample = rng.choice(others, size=min(n_samples, others.size), replace=False)
        return ExposureResult(exposure_from_rank(rank, n_cand), math.log2(n_cand), "exact", n_cand,
                              len(secrets),
                              rank=rank, extrapolated_exposure_bits=extrapolated_exposure(sample, s_star),
                              canary_logprob=s_star)
    est = extrapolated_exposure(others, s_star)
    return ExposureResult(min(est, math.log2(n_cand)), math.log2(n_cand), "extrapolated", n_cand,
                          len(secrets),
                          extrapolated_exposure_bits=est, canary_logprob=s_star)
