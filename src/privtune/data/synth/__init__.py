"""Synthetic private-text datasets: ``generate`` (in memory) and ``synth_dataset`` (a dataset directory).

    >>> from privtune.data.synth import generate
    >>> splits, info = generate("customersim", n_train=100, n_test=10, seed=0)

Generators are plugins: every module of this package that registers a :class:`Generator` subclass in
``GENERATORS`` is found automatically, so adding one is one new file.

Reproducibility: the output is a function of (generator, counts, seed, canary options, pool) only. The train split
does not depend on ``n_test``: train is written first from its own random stream.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
from pathlib import Path
from typing import Any

from privtune.data.schema import DatasetInfo, Record, write_dataset
from privtune.data.synth.base import GENERATORS, Document, Generator, Template, TextBuilder
from privtune.data.synth.canaries import CanarySpec, plant, redacted
from privtune.data.synth.identities import POOLS, IdentityFactory, UserIdentities, in_pool, pool_bit
from privtune.errors import ConfigError, fmt
from privtune.utils.owned import check_out
from privtune.utils.progress import make_progress

_INTERNAL = {"base", "canaries", "identities"}
for _m in pkgutil.iter_modules(__path__):
    if _m.name not in _INTERNAL and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

DEFAULT_CANARY_REPEATS = 10


def user_id(prefix: str, k: int) -> str:
    """The pseudonymous owner id of generated user ``k`` (no identity value in it)."""
    return f"{prefix}-u{k:06d}"




def _split(gen: Generator, split: str, n: int, start: int, ids: IdentityFactory, seed: int,
           progress: Any, sizes: tuple[int, int] | None = None, first_user: int = 0) -> tuple[list[Record], int]:
    """``n`` records and the number of users they belong to. With ``sizes`` (lo, hi): users of consecutive records,
    each owning a number of records drawn uniformly from ``lo .. hi`` (fixed K when lo = hi; the split's last user
    may have fewer), numbered from ``first_user``, each record naming its owner in ``meta.user``."""
    rng = random.Random(f"privtune:{seed}:{ids.pool}:{gen.name}:{split}")
    size_rng = random.Random(f"privtune:{seed}:{gen.name}:{split}:users")  # apart: documents do not depend on it
    task = progress.add_task(f"{gen.name} {split}", total=n)
    out = []
    who: Any = ids
    users, left = 0, 0
    for i in range(n):
        if sizes is not None and left == 0:
            who = UserIdentities(ids, gen.user_keeps)
            left = sizes[0] if sizes[0] == sizes[1] else size_rng.randint(*sizes)
            users += 1
        doc: Document = gen.document(ids=who, rng=rng)
        meta = doc.meta
        if sizes is not None:
            meta = {**meta, "user": user_id(gen.id_prefix, first_user + users - 1)}
            left -= 1
        out.append(Record(id=f"{gen.id_prefix}-{start + i:06d}", text=doc.text, spans=doc.spans,
                          meta=meta, label=doc.label))
        if i % 256 == 255 or i == n - 1:
            progress.update(task, completed=i + 1)
    return out, users


def records_per_user_range(value: Any) -> tuple[int, int] | None:
    """``K`` (an int or its text) -> (K, K); ``"A-B"`` -> (A, B), records per user uniform in ``A .. B``; None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(fmt("--records-per-user", "a positive integer K or a range A-B", value))
    if isinstance(value, int):
        lo = hi = value
    else:
        parts = str(value).strip().split("-")
        try:
            lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
        except ValueError:
            lo = hi = 0
    if not (1 <= lo <= hi):
        raise ConfigError(fmt("--records-per-user", "a positive integer K or a range A-B with 1 <= A <= B", value))
    return lo, hi


def generate(name: str, *, n_train: int | None = None, n_test: int | None = None, seed: int = 0,
             canary: str | None = None, canary_repeats: int | None = None, audit_canaries: int = 0,
             pool: str = "private", records_per_user: int | str | None = None
             ) -> tuple[dict[str, list[Record]], DatasetInfo]:
    """Generate a dataset in memory: ``({"train": [...], "test": [...]}, DatasetInfo)``.

    ``canary``: the exposure canary's secret (digits), or ``None`` to draw 6 random digits from ``seed``.
    ``canary_repeats``: copies inserted in train (default 10 for the private pool; 0 disables the canary).
    ``audit_canaries``: number M of one-run audit canaries, each in train with probability 1/2 (default 0).
    ``pool``: ``"private"`` (default) or ``"public"`` — identity values of the two pools never coincide (see
    :mod:`privtune.data.synth.identities`); public data carries no canaries.
    """
    gen = GENERATORS.get(name)()
    n_train = gen.default_n_train if n_train is None else n_train
    n_test = gen.default_n_test if n_test is None else n_test
    if pool not in POOLS:
        raise ConfigError(fmt("pool", f"one of {', '.join(POOLS)}", pool))
    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
        raise ConfigError(fmt("n_train", "a positive integer", n_train))
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 0:
        raise ConfigError(fmt("n_test", "a non-negative integer", n_test))
    sizes = records_per_user_range(records_per_user)
    if sizes is not None:
        if not gen.user_keeps:
            raise ConfigError(fmt("--records-per-user", "used with a generator that has repeat users "
                                  f"({', '.join(n for n in GENERATORS.names() if GENERATORS.get(n).user_keeps)})",
                                  name))
    if gen.task == "classification":  # canary records carry no class label: a classifier cannot train on them
        if canary is not None or (canary_repeats or 0) > 0 or audit_canaries:
            raise ConfigError(fmt("canary_repeats", f"0 for the classification generator `{name}`",
                                  canary_repeats if canary_repeats else "a canary",
                                  "Canary records have no class label; drop the canary options."))
        canary_repeats = 0
    if pool == "public":
        if canary is not None or (canary_repeats or 0) > 0 or audit_canaries:
            raise ConfigError(fmt("pool", "'private' when canaries are requested", pool,
                                  "Public-pool data never carries canaries."))
        canary_repeats = 0
    elif canary_repeats is None:
        canary_repeats = DEFAULT_CANARY_REPEATS
    if canary is not None and canary_repeats == 0:
        raise ConfigError(fmt("canary_repeats", "positive when a canary secret is given", canary_repeats))
    ids = IdentityFactory(seed=seed, pool=pool, salt=name)
    with make_progress() as progress:
        train, n_users = _split(gen, "train", n_train, 0, ids, seed, progress, sizes)
        test, _ = _split(gen, "test", n_test, n_train, ids, seed, progress, sizes, first_user=n_users)
    train, canary_info, audit_info = plant(train, prefix=gen.id_prefix, seed=seed, secret=canary,
                                           repeats=canary_repeats, audit_canaries=audit_canaries)
    if sizes is not None:  # canary records get owners too (every record of a user-level dataset has one)
        for r in train:
            if r.is_canary:
                kind = r.meta.get("canary_kind")
                r.meta["user"] = (f"{gen.id_prefix}-canary-user" if kind == "main"
                                  else f"{gen.id_prefix}-audit-user-{r.meta.get('audit_index', 0):05d}")
    info = DatasetInfo(
        name=name if pool == "private" else f"{name}-public", source=name, seed=seed, task=gen.task,
        canary=canary_info, audit=audit_info, class_labels=gen.class_labels,
        params={"generator": name, "n_train": n_train, "n_test": n_test, "pool": pool,
                "canary_repeats": canary_repeats, "audit_canaries": audit_canaries,
                **({"records_per_user": records_per_user} if sizes is not None else {})})
    return ({"train": train, "test": test} if n_test else {"train": train}), info


def synth_dataset(name: str, *, out: str | Path, overwrite: bool = False, **kwargs: Any) -> Path:
    """Generate (see :func:`generate`) and write a dataset directory atomically; same data again is a no-op."""
    check_out(out, overwrite=overwrite)  # a bad --out fails before generating
    splits, info = generate(name, **kwargs)
    return write_dataset(out, splits, info, overwrite=overwrite)


__all__ = ["GENERATORS", "CanarySpec", "Document", "Generator", "IdentityFactory", "Template", "TextBuilder",
           "generate", "in_pool", "pool_bit", "redacted", "synth_dataset"]
