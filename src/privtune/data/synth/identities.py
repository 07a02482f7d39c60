"""Identity values (names, phones, addresses, e-mails, ids) drawn from Faker, split into two disjoint pools.

**Pools.** Every identity value ``v`` of kind ``k`` has a pool bit ``β(k, v) = BLAKE2b(k ‖ 0x00 ‖ canon(v))[0] mod 2``,
where ``canon`` lower-cases and keeps only the part that identifies (digits of a phone, the e-mail, each name
component). ``pool="private"`` only ever emits values with ``β = 0``, ``pool="public"`` only values with ``β = 1``,
whatever the seed, so no name component, phone number, e-mail, street address, order or tracking number, company,
university, city or birth date of a public dataset can equal one of any private dataset. The embedded base model is
pre-trained on public-pool text: it learns the *form* of the data but none of its secrets. Shipment dates are not
identities and are not partitioned.

**Uniqueness.** One factory serves all splits of a dataset and never returns the same person, phone, e-mail,
address or order/tracking number twice, so train and test people are disjoint.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import string
from dataclasses import dataclass
from datetime import date, timedelta

from faker import Faker
from faker.providers.person.en_US import Provider as _Names

from privtune.errors import ConfigError, fmt

POOLS = ("private", "public")
_MAX_TRIES = 2000


def pool_bit(kind: str, canonical: str) -> int:
    """β(kind, value): 0 for the private pool, 1 for the public pool."""
    return hashlib.blake2b(f"{kind}\0{canonical}".encode(), digest_size=1).digest()[0] & 1


def canonical(kind: str, value: str) -> str:
    """The identifying part of a value: digits for phones, lower case for everything else."""
    if kind == "phone":
        return "".join(c for c in value.split("x")[0] if c.isdigit())[-10:]
    return " ".join(value.lower().split())


def in_pool(kind: str, value: str, pool: str) -> bool:
    return pool_bit(kind, canonical(kind, value)) == POOLS.index(pool)


def _partition(names: dict[str, float], pool: str) -> tuple[list[str], list[float]]:
    keep = [(n, w) for n, w in names.items() if in_pool("name", n, pool)]
    return [n for n, _ in keep], list(itertools.accumulate(w for _, w in keep))


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    gender: str  # "female" | "male": picks pronouns in biographies

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"


class IdentityFactory:
    """Draws unique identity values of one pool, reproducibly from ``seed`` (and ``salt``, e.g. the generator)."""

    def __init__(self, *, seed: int, pool: str = "private", salt: str = "", locale: str = "en_US"):
        if pool not in POOLS:
            raise ConfigError(fmt("pool", f"one of {', '.join(POOLS)}", pool))
        self.pool = pool
        self.faker = Faker(locale)
        digest = hashlib.sha256(f"privtune:{seed}:{pool}:{salt}".encode()).digest()
        self.faker.seed_instance(int.from_bytes(digest[:8], "big"))
        self.rng = random.Random(digest)
        self._used: dict[str, set[str]] = {}
        # Faker's own name lists (with its frequency weights), cut to this pool once
        self._first = {g: _partition(getattr(_Names, f"first_names_{g}"), pool) for g in ("female", "male")}
        self._last = _partition(_Names.last_names, pool)

    def _draw(self, kind: str, draw, *, unique: bool = True, check_pool: bool = True) -> str:
        """Draw until the value lies in this pool (and, if ``unique``, was not drawn before)."""
        used = self._used.setdefault(kind, set())
        bit = POOLS.index(self.pool)
        for _ in range(_MAX_TRIES):
            v = draw()
            c = canonical(kind, v)
            if (not unique or c not in used) and (not check_pool or pool_bit(kind, c) == bit):
                if unique:
                    used.add(c)
                return v
        raise ConfigError(fmt("n_train + n_test", f"small enough for the {kind} value space", len(used),
                              "Generate fewer records."))

    def person(self) -> Person:
        gender = self.rng.choice(("female", "male"))
        firsts, fw = self._first[gender]
        lasts, lw = self._last

        def draw() -> str:
            return f"{self.rng.choices(firsts, cum_weights=fw)[0]} {self.rng.choices(lasts, cum_weights=lw)[0]}"

        # name components are partitioned by the lists above; the full name is kept unique here
        full = self._draw("person", draw, check_pool=False)
        first, last = full.split(" ", 1)
        return Person(first, last, gender)

    def phone(self) -> str:
        return self._draw("phone", self.faker.phone_number)

    def email(self, person: Person) -> str:
        f, l = (_ascii(person.first), _ascii(person.last))
        domains = ("gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "proton.me",
                   "fastmail.com", "aol.com")

        def draw() -> str:
            n = self.rng.randint(1, 99)
            local = self.rng.choice((f"{f}.{l}", f"{f}{l}", f"{f[0]}{l}", f"{f}.{l}{n}", f"{f}_{l}",
                                     f"{l}.{f}", f"{f}{n}", f"{f[0]}.{l}{n}"))
            return f"{local}@{self.rng.choice(domains)}"
        return self._draw("email", draw)

    def address(self) -> str:
        fk = self.faker
        return self._draw("address", lambda: f"{fk.street_address()}, {fk.city()}, {fk.state_abbr()} "
                                               f"{fk.zipcode()}")

    def city(self) -> str:
        return self._draw("city", self.faker.city, unique=False)

    def company(self) -> str:
        return self._draw("company", self.faker.company, unique=False)

    def university(self) -> str:
        fk = self.faker
        forms = (lambda: f"University of {fk.city()}", lambda: f"{fk.state()} State University",
                 lambda: f"{fk.last_name()} College", lambda: f"{fk.city()} Institute of Technology",
                 lambda: f"{fk.last_name()} University")
        return self._draw("university", lambda: self.rng.choice(forms)(), unique=False)

    def order_id(self) -> str:
        d = string.digits
        return self._draw("order_id", lambda: "-".join("".join(self.rng.choices(d, k=k)) for k in (3, 5, 4)))

    def tracking_id(self) -> str:
        a = string.ascii_uppercase + string.digits
        return self._draw("tracking_id", lambda: "".join(self.rng.choices(a, k=10)))

    def birth_date(self) -> date:
        lo = date(1945, 1, 1).toordinal()
        hi = date(2004, 12, 31).toordinal()
        return date.fromordinal(int(self._draw("birth_date", lambda: str(self.rng.randint(lo, hi)),
                                               unique=False)))

    def shipment_dates(self) -> tuple[date, date]:
        """(ship date, expected delivery): not identities, so neither unique nor partitioned."""
        ship = date(2023, 1, 1) + timedelta(days=self.rng.randint(0, 3 * 365))
        return ship, ship + timedelta(days=self.rng.randint(1, 12))


def _ascii(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum() and c.isascii()) or "user"


class UserIdentities:
    """The identity values of one *user* across several documents: a view of an :class:`IdentityFactory` that
    draws each kind in ``keep`` once (the first time a document asks) and returns it again afterwards; every other
    kind (order and tracking numbers, dates) is drawn fresh per document. A repeat customer keeps name, phone and
    address; a person with several biographies keeps every personal fact."""

    def __init__(self, ids: IdentityFactory, keep: frozenset[str]):
        self._ids, self._keep, self._cache = ids, keep, {}

    @property
    def pool(self) -> str:
        return self._ids.pool

    def __getattr__(self, kind: str):
        draw = getattr(self._ids, kind)
        if kind not in self._keep:
            return draw

        def cached(*args):
            if kind not in self._cache:
                self._cache[kind] = draw(*args)
            return self._cache[kind]
        return cached
