"""``regex``: pattern-based tagging of structured identifiers.

Labels and what they match (English / North-American conventions):

- EMAIL — ``local@domain.tld``;
- PHONE — 10-digit numbers written ``555-123-4567``, ``(555)123-4567``, ``555.123.4567``, ``5551234567``, with an
  optional ``+1``/``001`` prefix and ``x123``/``ext. 123`` extension; international ``+CC ...`` numbers;
- ADDRESS — street addresses: a house number, capitalised street words and a USPS street suffix (USPS Publication 28,
  appendix C1), optional unit (``Apt. 4``, ``Suite 200``), city, state code and ZIP; ``P.O. Box`` numbers;
- DATE — ``March 3, 2024``, ``3 March 2024``, ``Mon, Mar 3``, ``03/03/2024``, ``2024-03-03``, ``3.3.2024``;
- ORDER_ID — three or more hyphen-joined groups of digits/capitals with at least one digit (``123-45678-9012``);
- TRACKING_ID — 8–22 capitals and digits with at least one of each (``1Z999AA10123456784``);
- ID_NUMBER — any other run of 6 or more digits.

Names, organisations and places need a model (``presidio``) or a list of known values (``values:FILE``).
When matches overlap, the pattern listed first wins (so a phone number is not also an ORDER_ID).
"""

from __future__ import annotations

import re

from privtune.data.schema import Span
from privtune.data.taggers.base import TAGGERS, Occupied, Tagger

_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_WEEKDAY = r"(?:Mon|Tue(?:s)?|Wed(?:nes)?|Thu(?:rs)?|Fri|Sat(?:ur)?|Sun)(?:day)?\.?,?\s+"
_DAYNUM = r"\d{1,2}(?:st|nd|rd|th)?"
# USPS standard street suffixes (full names and common abbreviations)
_SUFFIXES = (
    "Alley Aly Annex Arcade Avenue Ave Av Bayou Beach Bend Bluff Bluffs Bottom Boulevard Blvd Branch Bridge Brook "
    "Brooks Burg Burgs Bypass Camp Canyon Cape Causeway Center Centers Circle Cir Circles Cliff Cliffs Club Common "
    "Commons Corner Corners Course Court Ct Courts Cove Coves Creek Crescent Crest Crossing Crossroad Curve Dale Dam "
    "Divide Drive Dr Drives Estate Estates Expressway Expy Extension Extensions Fall Falls Ferry Field Fields Flat "
    "Flats Ford Fords Forest Forge Forges Fork Forks Fort Freeway Fwy Garden Gardens Gateway Glen Glens Green Greens "
    "Grove Groves Harbor Harbors Haven Heights Hts Highway Hwy Hill Hills Hollow Inlet Island Islands Isle Junction "
    "Junctions Key Keys Knoll Knolls Lake Lakes Land Landing Lane Ln Light Lights Loaf Lock Locks Lodge Loop Mall "
    "Manor Manors Meadow Meadows Mews Mill Mills Mission Motorway Mount Mountain Mountains Neck Orchard Oval "
    "Overpass Park Parks Parkway Pkwy Parkways Pass Passage Path Pike Pine Pines Place Pl Plain Plains Plaza Point "
    "Points Port Ports Prairie Radial Ramp Ranch Rapid Rapids Rest Ridge Ridges River Road Rd Roads Route Row Rue "
    "Run Shoal Shoals Shore Shores Skyway Spring Springs Spur Spurs Square Sq Squares Station Stravenue Stream "
    "Street St Streets Summit Terrace Ter Throughway Trace Track Trafficway Trail Trl Trailer Tunnel Turnpike "
    "Underpass Union Unions Valley Valleys Via Viaduct View Views Village Villages Ville Vista Walk Walks Wall Way "
    "Ways Well Wells").split()
_CAP = r"[A-Z][a-zA-Z'\-]+"
_ADDRESS = (rf"\b\d{{1,6}}\s+(?:(?:[NSEW]|North|South|East|West)\.?\s+)?(?:{_CAP}\s+){{0,3}}"
            rf"(?:{'|'.join(sorted(_SUFFIXES, key=len, reverse=True))})\b\.?"
            r"(?:,?\s+(?:(?:Apt|Apartment|Suite|Ste|Unit)\b\.?|#)\s*[A-Za-z0-9\-]+)?"
            rf"(?:,\s*{_CAP}(?:\s+{_CAP}){{0,2}})?"
            r"(?:,?\s+[A-Z]{2}(?:\s+\d{5}(?:-\d{4})?)?\b)?")

PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((label, re.compile(p)) for label, p in (
    ("EMAIL", r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"),
    ("ADDRESS", _ADDRESS),
    ("ADDRESS", r"\bP\.?\s?O\.?\s+Box\s+\d+\b"),
    ("PHONE", r"(?<![\w+])(?:(?:\+1|001)[\s.\-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.\-]?)\d{3}[\s.\-]?\d{4}"
              r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?!\w)"),
    ("PHONE", r"(?<![\w+])\+\d{1,3}(?:[\s.\-]?\(?\d{1,4}\)?){2,5}(?!\w)"),
    ("DATE", rf"\b(?:{_WEEKDAY})?{_MONTH}\s+{_DAYNUM}\b(?:,?\s+\d{{4}}\b)?"),
    ("DATE", rf"\b(?:{_WEEKDAY})?{_DAYNUM}\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{4}}\b)?"),
    ("DATE", r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}[/.]\d{1,2}[/.](?:\d{4}|\d{2})\b"),
    ("ORDER_ID", r"\b(?=[A-Z0-9\-]*\d)[A-Z0-9]{2,}(?:-[A-Z0-9]{2,}){2,}\b"),
    ("TRACKING_ID", r"\b(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{8,22}\b"),
    ("ID_NUMBER", r"\b\d{6,}\b"),
))


@TAGGERS.register("regex")
class RegexTagger(Tagger):
    name = "regex"
    labels = ("EMAIL", "ADDRESS", "PHONE", "DATE", "ORDER_ID", "TRACKING_ID", "ID_NUMBER")

    def tag(self, text: str) -> list[Span]:
        # Earlier patterns take precedence on overlaps. A pattern's own matches never overlap one another
        # (finditer resumes after each match), so each is checked against the earlier patterns' spans only,
        # indexed once per pattern: O(P · n log n) for n matches, where comparing every pair was quadratic.
        taken: list[tuple[int, int, str]] = []
        for label, pat in PATTERNS:
            occupied = Occupied((a, b) for a, b, _ in taken)
            taken.extend((a, b, label) for a, b in (m.span() for m in pat.finditer(text))
                         if b > a and not occupied.overlaps(a, b))
        return [Span(a, b, label) for a, b, label in sorted(taken)]
