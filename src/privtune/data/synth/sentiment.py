"""``sentiment``: short customer reviews labelled ``negative`` or ``positive`` (an SST-2-like binary task, offline).

A review has an optional opener naming the product, one to three sentences about aspects of the purchase
(delivery, quality, support, price, packaging) with the review's polarity, often one sentence of the *opposite*
polarity (introduced by "However, ..."), an optional overall verdict, and sometimes a sign-off with the reviewer's
first name, city or order number (spans PERSON, ADDRESS, ORDER_ID: the reviews are private text too). Negations and
hedges appear in both polarities ("not cheap plastic", "not terrible, but I regret buying it"), and a small share of
labels is flipped (``meta["label_noise"]``), as in human-annotated data, so the task is learnable but not trivial.
Phrasings come from ``banks/sentiment.toml``.
"""

from __future__ import annotations

import random

from privtune.data.synth.base import GENERATORS, Document, Generator, TextBuilder
from privtune.data.synth.identities import IdentityFactory

ASPECTS = ("delivery", "quality", "support", "price", "packaging")
LABELS = ["negative", "positive"]
PRODUCTS = ("kettle", "desk lamp", "blender", "backpack", "coffee grinder", "office chair", "rice cooker",
            "phone case", "air fryer", "toaster", "vacuum cleaner", "yoga mat", "water bottle", "headphone stand",
            "bookshelf", "electric toothbrush", "frying pan", "space heater", "travel mug", "keyboard")
P_OPENER = 0.6
P_MIXED = 0.45        # one aspect sentence of the opposite polarity
P_VERDICT = 0.6       # an overall verdict (always present when the aspect sentences are balanced)
P_SIGNOFF = 0.35      # private details at the end
P_LABEL_NOISE = 0.04


def _lower_first(s: str) -> str:
    return s if s.startswith(("I ", "I'")) else s[:1].lower() + s[1:]


@GENERATORS.register("sentiment")
class Sentiment(Generator):
    name = "sentiment"
    id_prefix = "rv"
    description = "short customer reviews labelled negative/positive (binary sentiment classification)"
    task = "classification"
    class_labels = LABELS
    default_n_train = 5_000
    default_n_test = 1_000

    def _sentence(self, rng: random.Random, slot: str, product: str) -> str:
        b = TextBuilder().render(self.pick(rng, slot), {"product": (product, None)})
        return b.build()[0]

    def document(self, *, ids: IdentityFactory, rng: random.Random) -> Document:
        polarity = rng.random() < 0.5            # True: positive
        own, other = ("pos", "neg") if polarity else ("neg", "pos")
        product = rng.choice(PRODUCTS)
        n_main = rng.randint(1, 3)
        aspects = rng.sample(ASPECTS, n_main + 1)
        sentences = [self._sentence(rng, f"{own}_{a}", product) for a in aspects[:n_main]]
        mixed = rng.random() < P_MIXED
        if mixed:
            contrast = _lower_first(self._sentence(rng, f"{other}_{aspects[n_main]}", product))
            sentences.insert(rng.randint(1, len(sentences)), self.pick(rng, "but").source + contrast)
        verdict = (mixed and n_main == 1) or rng.random() < P_VERDICT
        b = TextBuilder()
        if rng.random() < P_OPENER:
            b.text(self._sentence(rng, "opener", product) + " ")
        b.text(" ".join(sentences))
        if verdict:
            b.text(" " + self._sentence(rng, f"verdict_{own}", product))
        if rng.random() < P_SIGNOFF:
            person = ids.person()
            b.text(" ").render(self.pick(rng, "signoff"), {"first": (person.first, "PERSON"),
                                                           "city": (ids.city(), "ADDRESS"),
                                                           "order": (ids.order_id(), "ORDER_ID")})
        noisy = rng.random() < P_LABEL_NOISE
        text, spans = b.build()
        label = LABELS[int(polarity != noisy)]
        return Document(text=text, spans=spans, label=label,
                        meta={"mixed": mixed, "aspects": n_main + int(mixed), "label_noise": noisy})
