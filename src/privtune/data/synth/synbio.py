"""``synbio``: synthetic biographies of fictional people.

A biography opens with an introduction and then, in random order, gives some of: birth date and place, home
address, phone, e-mail, employer and job, university and subject, a hobby. Every sentence comes from a bank of at
least 30 templates per slot (``banks/synbio.toml``). Pronouns follow the person's gender.

Labels: PERSON, DATE (birth date), LOCATION (birth place), ADDRESS, PHONE, EMAIL, ORGANIZATION (employer,
university).
"""

from __future__ import annotations

import random

from faker.providers.job.en_US import Provider as _Jobs

from privtune.data.synth.base import GENERATORS, Document, Generator, TextBuilder, format_date
from privtune.data.synth.identities import IdentityFactory

#: (slot, probability that the biography includes it); the introduction always comes first.
SLOTS = (("birth", 1.0), ("address", 0.8), ("phone", 0.75), ("email", 0.75), ("employer", 0.85),
         ("university", 0.7), ("hobby", 0.6))
SUBJECTS = ("biology", "chemistry", "physics", "mathematics", "economics", "history", "philosophy", "nursing",
            "computer science", "mechanical engineering", "civil engineering", "law", "medicine", "architecture",
            "psychology", "sociology", "literature", "music", "fine arts", "accounting", "marketing", "education",
            "political science", "geography", "statistics", "linguistics")
HOBBIES = ("hiking", "fishing", "sailing", "cycling", "running", "swimming", "camping", "skiing", "birdwatching",
           "gardening", "painting", "baking", "cooking", "reading", "knitting", "climbing", "kayaking", "surfing",
           "dancing", "singing", "bowling", "woodworking", "rowing", "skating", "playing chess",
           "playing the guitar", "playing tennis", "playing board games", "watching old films", "writing poetry",
           "restoring old cars", "collecting stamps")
PRONOUNS = {"female": {"He": "She", "he": "she", "His": "Her", "his": "her", "him": "her"},
            "male": {"He": "He", "he": "he", "His": "His", "his": "his", "him": "him"}}


def _job_title(title: str) -> str:
    # "Actuary" -> "actuary", but keep acronyms such as "IT consultant"
    return title[0].lower() + title[1:] if title[1:2].islower() else title


JOBS = tuple(_job_title(j) for j in _Jobs.jobs if not set(j) & set(",()/"))


def with_article(noun: str) -> str:
    return f"{'an' if noun[0].lower() in 'aeiou' else 'a'} {noun}"


@GENERATORS.register("synbio")
class SynBio(Generator):
    name = "synbio"
    id_prefix = "sb"
    description = "synthetic biographies (name, birth, address, phone, e-mail, employer, university)"
    default_n_train = 5_000
    default_n_test = 500
    #: a person's facts stay the same across their biographies (each biography tells a different subset)
    user_keeps = frozenset({"person", "phone", "address", "email", "birth_date", "city", "company", "university"})

    def document(self, *, ids: IdentityFactory, rng: random.Random) -> Document:
        person = ids.person()
        job = rng.choice(JOBS)
        values = {
            "name": (person.full, "PERSON"), "first": (person.first, "PERSON"),
            "job": (job, None), "a_job": (with_article(job), None),
            **{k: (v, None) for k, v in PRONOUNS[person.gender].items()},
        }
        slots = [s for s, p in SLOTS if rng.random() < p]
        rng.shuffle(slots)
        # draw only the values this biography uses (keeps generation fast and uniqueness sets small)
        for slot in slots:
            if slot == "birth":
                values["birth_date"] = (format_date(ids.birth_date(), rng), "DATE")
                values["birth_place"] = (ids.city(), "LOCATION")
            elif slot == "address":
                values["address"] = (ids.address(), "ADDRESS")
            elif slot == "phone":
                values["phone"] = (ids.phone(), "PHONE")
            elif slot == "email":
                values["email"] = (ids.email(person), "EMAIL")
            elif slot == "employer":
                values["employer"] = (ids.company(), "ORGANIZATION")
            elif slot == "university":
                values["university"] = (ids.university(), "ORGANIZATION")
                values["subject"] = (rng.choice(SUBJECTS), None)
            elif slot == "hobby":
                values["hobby"] = (rng.choice(HOBBIES), None)
        b = TextBuilder()
        b.render(self.pick(rng, "intro"), values)
        for slot in slots:
            b.text(" ")
            b.render(self.pick(rng, slot), values)
        text, spans = b.build()
        return Document(text=text, spans=spans)
