"""``customersim``: customer-support dialogs about tracking a package, in the style of the CustomerSim corpus.

Each dialog has ``SYS:``/``USR:`` turns, one per line. The customer gives their name, order number
(``###-#####-####``), and usually a phone number and shipping address, in a random order; the bot answers with a
tracking number (10 upper-case alphanumerics) and shipment dates. Every phrasing comes from a bank of at least 30
variants per slot (``banks/customersim.toml``); openings, acknowledgements and closings vary too.

Labels: PERSON (full or first name), ORDER_ID, PHONE, ADDRESS, TRACKING_ID, DATE.
"""

from __future__ import annotations

import random

from privtune.data.synth.base import GENERATORS, Document, Generator, Template, TextBuilder, format_date
from privtune.data.synth.identities import IdentityFactory

#: Fictional carriers; the carrier's name is not sensitive.
COMPANIES = ("ParcelPoint", "SwiftShip", "Northwind Express", "BlueBox Logistics", "RapidRoute", "MailMotion",
             "Harborline Parcels", "Courierly")
P_PHONE = 0.85        # probability that the bot asks for a phone number
P_ADDRESS = 0.8       # ... for the shipping address
P_ACK = 0.6           # an acknowledgement before the next question
P_LOOKUP = 0.7        # "Let me check that for you." before the answer
P_SPLIT_ANSWER = 0.5  # tracking number and dates in two turns rather than one


@GENERATORS.register("customersim")
class CustomerSim(Generator):
    name = "customersim"
    id_prefix = "cs"
    description = "customer-support dialogs about tracking a package (SYS:/USR: turns)"
    default_n_train = 10_000
    default_n_test = 1_000
    #: what a repeat customer keeps across dialogs (order and tracking numbers, dates are new each time)
    user_keeps = frozenset({"person", "phone", "address"})

    def __init__(self) -> None:
        acks = self.bank()["sys_ack"]
        self._acks_before_name = [t for t in acks if "first" not in t.fields]

    def document(self, *, ids: IdentityFactory, rng: random.Random) -> Document:
        person = ids.person()
        ship, eta = ids.shipment_dates()
        values = {
            "name": (person.full, "PERSON"), "first": (person.first, "PERSON"),
            "order": (ids.order_id(), "ORDER_ID"), "phone": (ids.phone(), "PHONE"),
            "address": (ids.address(), "ADDRESS"), "tracking": (ids.tracking_id(), "TRACKING_ID"),
            "ship_date": (format_date(ship, rng), "DATE"), "eta": (format_date(eta, rng), "DATE"),
            "company": (rng.choice(COMPANIES), None),
        }
        b = TextBuilder()

        def turn(role: str, *tpls: Template) -> None:
            if len(b):
                b.text("\n")
            b.text(f"{role}: ")
            for i, t in enumerate(tpls):
                if i:
                    b.text(" ")
                b.render(t, values)

        turn("SYS", self.pick(rng, "sys_greeting"))
        opening = self.pick(rng, "usr_opening")
        turn("USR", opening)
        slots = ["name"] + ([] if "order" in opening.fields else ["order"])
        slots += [s for s, p in (("phone", P_PHONE), ("address", P_ADDRESS)) if rng.random() < p]
        rng.shuffle(slots)
        name_known = False
        for k, slot in enumerate(slots):
            ask = self.pick(rng, f"sys_ask_{slot}")
            if k and rng.random() < P_ACK:
                ack = self.pick(rng, "sys_ack") if name_known else rng.choice(self._acks_before_name)
                turn("SYS", ack, ask)
            else:
                turn("SYS", ask)
            turn("USR", self.pick(rng, f"usr_give_{slot}"))
            name_known = name_known or slot == "name"
        lookup = [self.pick(rng, "sys_lookup")] if rng.random() < P_LOOKUP else []
        if rng.random() < P_SPLIT_ANSWER:
            turn("SYS", *lookup, self.pick(rng, "sys_tracking"))
            turn("SYS", self.pick(rng, "sys_dates"))
        else:
            turn("SYS", *lookup, self.pick(rng, "sys_tracking"), self.pick(rng, "sys_dates"))
        turn("USR", self.pick(rng, "usr_closing"))
        turn("SYS", self.pick(rng, "sys_closing"))
        text, spans = b.build()
        return Document(text=text, spans=spans)
