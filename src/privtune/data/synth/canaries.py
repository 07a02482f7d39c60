"""Canaries: secrets planted in the training split to measure memorization.

**Exposure canary** (Carlini et al. 2019, *The Secret Sharer*): one record ``"My ID is {secret}."`` whose secret
is ``length`` characters from ``alphabet`` (default 6 digits, 10^6 candidates), inserted ``repeats`` times
(default 10) as its own records. Exposure ranks the secret's likelihood among all candidates:
``exposure = log2(candidates) − log2(rank)`` bits.

**Audit canaries** (Steinke, Nasr & Jagielski 2023, *Privacy Auditing with One (1) Training Run*): ``M`` distinct
random secrets in a second template, ``"My access code is {secret}."``; each is included in the training split
once, independently with probability 1/2 (seeded). The auditor scores all ``M`` and guesses which were included;
the guesses' accuracy lower-bounds ε. ``dataset.json`` records the secrets and the inclusion flags.

Every canary record has ``meta = {"canary": true, "canary_kind": "main" | "audit"}`` (audit records also carry
``audit_index``, the position of their secret in ``dataset.json`` ``audit.secrets``) and one ``CANARY`` span exactly
over the secret. Canaries only go into ``train``; test never holds one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from privtune.data.schema import Record, Span
from privtune.errors import ConfigError, fmt

MAIN_TEMPLATE = "My ID is {secret}."
AUDIT_TEMPLATE = "My access code is {secret}."
DIGITS = "0123456789"
AUDIT_INCLUSION_P = 0.5


@dataclass(frozen=True)
class CanarySpec:
    """A canary template and its candidate space (``len(alphabet) ** length`` secrets)."""

    template: str = MAIN_TEMPLATE
    alphabet: str = DIGITS
    length: int = 6

    def __post_init__(self) -> None:
        if self.template.count("{secret}") != 1:
            raise ConfigError(fmt("canary template", "text with exactly one {secret}", self.template))
        if self.length < 1 or len(set(self.alphabet)) != len(self.alphabet) or not self.alphabet:
            raise ConfigError(fmt("canary alphabet/length", "distinct characters and a positive length",
                                  (self.alphabet, self.length)))

    @property
    def candidates(self) -> int:
        return len(self.alphabet) ** self.length

    def secret_at(self, index: int) -> str:
        """The ``index``-th candidate in lexicographic order (0 <= index < candidates)."""
        chars = []
        for _ in range(self.length):
            index, r = divmod(index, len(self.alphabet))
            chars.append(self.alphabet[r])
        return "".join(reversed(chars))

    def random_secret(self, rng: random.Random) -> str:
        return self.secret_at(rng.randrange(self.candidates))

    def render(self, secret: str) -> tuple[str, Span]:
        """The canary text for ``secret`` and the CANARY span over the secret."""
        start = self.template.index("{secret}")
        text = self.template.replace("{secret}", secret)
        return text, Span(start, start + len(secret), "CANARY")

    def to_dict(self) -> dict[str, Any]:
        return {"template": self.template, "alphabet": self.alphabet, "length": self.length,
                "candidates": self.candidates}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CanarySpec":
        """Rebuild the spec from ``dataset.json``'s ``canary`` or ``audit`` object."""
        return cls(template=d["template"], alphabet=d["alphabet"], length=d["length"])


def _record(spec: CanarySpec, secret: str, rid: str, meta: dict[str, Any]) -> Record:
    text, span = spec.render(secret)
    return Record(id=rid, text=text, spans=[span], meta={"canary": True, **meta})


def interleave(records: list[Record], extra: list[Record], rng: random.Random) -> list[Record]:
    """Insert ``extra`` at uniformly random positions, keeping the order of ``records``."""
    extra = list(extra)
    rng.shuffle(extra)
    n = len(records) + len(extra)
    pos = set(rng.sample(range(n), len(extra)))
    it_r, it_e = iter(records), iter(extra)
    return [next(it_e) if i in pos else next(it_r) for i in range(n)]


def plant(train: list[Record], *, prefix: str, seed: int, secret: str | None, repeats: int,
          audit_canaries: int) -> tuple[list[Record], dict[str, Any] | None, dict[str, Any] | None]:
    """Insert the exposure canary (``repeats`` copies) and the audit canaries into ``train``.

    Returns the new training list and the ``canary`` and ``audit`` objects of ``dataset.json`` (``None`` when
    there is none). The secret, when not given, is drawn from ``seed``.
    """
    if repeats < 0 or audit_canaries < 0:
        raise ConfigError(fmt("canary_repeats / audit_canaries", "non-negative", (repeats, audit_canaries)))
    rng = random.Random(f"privtune:{seed}:canaries")
    main = CanarySpec(MAIN_TEMPLATE)
    extra: list[Record] = []
    canary_info = None
    if secret is not None:
        if not (1 <= len(secret) <= 18 and all(c in DIGITS for c in secret)):
            raise ConfigError(fmt("canary", "1 to 18 digits (6 by default)", "<hidden>",
                                  "Pass digits only, e.g. --canary 341752 (the value is never echoed)."))
        main = CanarySpec(MAIN_TEMPLATE, length=len(secret))
    if repeats:
        secret = secret if secret is not None else main.random_secret(rng)
        ids = [f"{prefix}-canary-{k:03d}" for k in range(repeats)]
        extra += [_record(main, secret, rid, {"canary_kind": "main"}) for rid in ids]
        canary_info = {**main.to_dict(), "secret": secret, "repeats": repeats, "label": "CANARY",
                       "split": "train", "record_ids": ids}
    audit_info = None
    if audit_canaries:
        spec = CanarySpec(AUDIT_TEMPLATE)
        if audit_canaries > spec.candidates // 2:
            raise ConfigError(fmt("audit_canaries", f"at most {spec.candidates // 2}", audit_canaries))
        arng = random.Random(f"privtune:{seed}:audit")
        secrets = [spec.secret_at(i) for i in arng.sample(range(spec.candidates), audit_canaries)]
        included = [arng.random() < AUDIT_INCLUSION_P for _ in secrets]
        extra += [_record(spec, s, f"{prefix}-audit-{i:05d}", {"canary_kind": "audit", "audit_index": i})
                  for i, (s, inc) in enumerate(zip(secrets, included)) if inc]
        audit_info = {**spec.to_dict(), "secrets": secrets, "included": included,
                      "inclusion_probability": AUDIT_INCLUSION_P, "repeats": 1, "seed": seed, "label": "CANARY",
                      "reference": "Steinke, Nasr & Jagielski 2023, Privacy Auditing with One (1) Training Run"}
    return (interleave(train, extra, rng) if extra else train), canary_info, audit_info


def redacted(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy of a ``canary``/``audit`` object safe to print: secrets replaced by ``[CANARY]``."""
    if info is None:
        return None
    out = dict(info)
    if "secret" in out:
        out["secret"] = "[CANARY]"
    if "secrets" in out:
        out["secrets"] = f"[{len(out['secrets'])} hidden]"
    return out
