"""From character spans to per-token sensitive masks, for any Hugging Face *fast* tokenizer.

A token covers the characters ``[a, b)`` of its record's text (its offset mapping). It is **sensitive** when that
range overlaps a span ``[s, e)``, i.e. ``a < e and s < b``. Consequences, all deliberate:

- a token that straddles a span boundary (``"Ġ555"`` covering a space and the first digits of a phone number,
  or ``"lace,"`` covering the end of a name and a comma) is sensitive — it carries secret characters;
- tokens with an empty range (``a == b``: special tokens such as ``[CLS]``, ``<eos>``, and added tokens that map to
  no text) and tokens the tokenizer reports as special are never sensitive;
- a token overlapping several spans takes the first one (lowest index) as its label.

Byte-level BPE tokenizers that do not trim offsets report the leading space of ``"ĠAda"`` as part of the token;
the rule above then marks it sensitive when ``Ada`` is, and leaves the preceding token alone.

Causal-LM evaluators score token ``t`` from the prefix ``< t``: use ``sensitive[1:]`` as the mask for the
``logits[:-1]`` predictions.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from privtune.data.schema import Record, Span
from privtune.errors import ConfigError, ModelLoadError, fmt
from privtune.utils.hub import hub_offline

NO_SPAN = -1
_NON_SPACE = re.compile(r"\S+")


def token_span_index(offsets: Sequence[Sequence[int]], spans: Sequence[Span], *,
                     special: Sequence[int | bool] | None = None) -> list[int]:
    """For each token ``(a, b)`` the index of the first span it overlaps, or ``NO_SPAN`` (-1).

    ``spans`` must be sorted and non-overlapping (as :class:`~privtune.data.schema.Record` guarantees).
    ``special`` (optional, one flag per token) forces a token to ``NO_SPAN``. Cost: O(T log S).
    """
    if special is not None and len(special) != len(offsets):
        raise ConfigError(fmt("special", f"one flag per token ({len(offsets)})", len(special)))
    ends = [s.end for s in spans]
    out = [NO_SPAN] * len(offsets)
    if not spans:
        return out
    for i, (a, b) in enumerate(offsets):
        if a >= b or (special is not None and special[i]):
            continue
        j = bisect.bisect_right(ends, a)  # first span with end > a
        if j < len(spans) and spans[j].start < b:
            out[i] = j
    return out


def token_mask(offsets: Sequence[Sequence[int]], spans: Sequence[Span], *,
               special: Sequence[int | bool] | None = None) -> list[bool]:
    """Per-token sensitive flags: ``True`` where the token's character range overlaps a span."""
    return [j != NO_SPAN for j in token_span_index(offsets, spans, special=special)]


def whitespace_offsets(text: str) -> list[tuple[int, int]]:
    """Offsets of whitespace-separated tokens: the tokenizer-free unit used by ``privtune data stats``."""
    return [m.span() for m in _NON_SPACE.finditer(text)]


def load_fast_tokenizer(name_or_path: str, *, allow_download: bool = False) -> Any:
    """A Hugging Face fast tokenizer from a local directory or a cached hub id.

    Offline unless ``allow_download`` (CLI ``--allow-download``), whatever ``HF_HUB_OFFLINE`` says: the load is
    ``local_files_only`` in the hub's offline mode (:func:`~privtune.utils.hub.hub_offline`), so a name missing from
    the cache fails at once instead of retrying an unreachable hub.
    """
    try:
        from transformers import AutoTokenizer

        with hub_offline(allow_download):
            tok = AutoTokenizer.from_pretrained(name_or_path, use_fast=True, local_files_only=not allow_download)
    except (OSError, ValueError) as e:
        if Path(name_or_path).expanduser().exists():
            fix = f"It could not be loaded ({type(e).__name__}); point it at a folder saved with save_pretrained."
        elif allow_download:
            fix = f"Downloading it failed ({type(e).__name__}); check the name and the network."
        else:
            fix = ("It is not in the local Hugging Face cache and privtune does not download at run time: download "
                   "it first (`huggingface-cli download NAME`), pass a local directory, or use --allow-download.")
        raise ModelLoadError(fmt("tokenizer", "a local tokenizer directory or a cached Hugging Face id",
                                 name_or_path, fix)) from None
    _check_fast(tok)
    return tok


#: Characters tokenized per token of ``max_length`` at first (English runs at about 4 characters a token); a text
#: whose tokens are longer is retried with twice the characters until its head fills ``max_length``.
HEAD_CHARS_PER_TOKEN = 8
#: Characters the kept tokens must end before the cut of the head, away from any effect of the cut.
HEAD_MARGIN = 64
_WORD_END = re.compile(r"\S(?=\s)")


def _head(text: str, limit: int) -> str:
    """The start of ``text`` up to a word end: the last one in the second half of ``limit`` characters, else the
    first one after (a cut inside a word changes its tokens: WordPiece maps a word over 100 characters to [UNK])."""
    if len(text) <= limit:
        return text
    cut = None
    for m in _WORD_END.finditer(text, limit // 2, limit):
        cut = m.end()
    if cut is None:
        m = _WORD_END.search(text, limit)
        cut = m.end() if m else len(text)
    return text[:cut]


def tokenize_head(tokenizer: Any, texts: Sequence[str], *, max_length: int | None, **kwargs: Any) -> dict[str, list]:
    """``tokenizer(texts, truncation=True, max_length=max_length, **kwargs)`` without tokenizing whole long texts.

    A fast tokenizer truncates after tokenizing everything: a 20 MB record became millions of tokens and gigabytes
    of offsets before all but ``max_length`` were dropped. Here each text is cut at a word end near
    ``HEAD_CHARS_PER_TOKEN x max_length`` characters first. The result is accepted once its kept tokens end
    ``HEAD_MARGIN`` characters before the cut, so that they are the tokens the whole text would give (tokenizers
    split text into words at whitespace and tokenize each word on its own); otherwise the head doubles, up to the
    whole text. ``max_length=None`` tokenizes everything; so does a tokenizer that truncates on the left, or a slow
    one (it has no offsets). Returns the encoding's lists, with offsets (``offset_mapping``) from fast tokenizers.
    """
    if max_length is None or not getattr(tokenizer, "is_fast", False) \
            or getattr(tokenizer, "truncation_side", "right") != "right":
        enc = tokenizer(list(texts), truncation=max_length is not None, max_length=max_length, **kwargs)
        return {k: list(v) for k, v in enc.items()}
    kwargs = {**kwargs, "return_offsets_mapping": True}
    heads = [_head(t, HEAD_CHARS_PER_TOKEN * max_length) for t in texts]
    out = {k: list(v) for k, v in tokenizer(heads, truncation=True, max_length=max_length, **kwargs).items()}
    for i, text in enumerate(texts):
        head = heads[i]
        while len(head) < len(text) and not _head_suffices(out["input_ids"][i], out["offset_mapping"][i],
                                                           len(head), max_length):
            head = _head(text, 2 * len(head))
            one = tokenizer([head], truncation=True, max_length=max_length, **kwargs)
            for k in out:
                out[k][i] = one[k][0]
    return out


def _head_suffices(ids: Sequence[int], offsets: Sequence[Sequence[int]], head_len: int, max_length: int) -> bool:
    end = max((b for a, b in offsets if b > a), default=0)
    return len(ids) >= max_length and end <= head_len - HEAD_MARGIN


@dataclass
class EncodedRecord:
    """One record tokenized, with its per-token sensitivity (all lists have one entry per token)."""

    id: str
    input_ids: list[int]
    attention_mask: list[int]
    sensitive: list[bool]
    span_label: list[str | None]          # label of the overlapped span, or None
    span_index: list[int]                 # index into the record's spans, or -1
    offsets: list[tuple[int, int]]        # character range of each token ((0, 0) for special tokens)
    truncated: bool = False               # True when max_length cut off part of the text
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_sensitive(self) -> int:
        return sum(self.sensitive)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "sensitive": self.sensitive, "span_label": self.span_label, "span_index": self.span_index,
                "offsets": [list(o) for o in self.offsets], "truncated": self.truncated, "meta": self.meta}


def _check_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(fmt("tokenizer", "a Hugging Face fast tokenizer (it provides offset mappings)",
                              type(tokenizer).__name__,
                              "Load it with AutoTokenizer.from_pretrained(..., use_fast=True) or wrap a "
                              "`tokenizers.Tokenizer` in PreTrainedTokenizerFast."))


def encode_records(tokenizer: Any, records: Iterable[Record], *, max_length: int | None,
                   add_special_tokens: bool = True, batch_size: int = 512) -> list[EncodedRecord]:
    """Tokenize ``records`` and mark sensitive tokens (see the module docstring for the rule).

    ``max_length`` truncates (special tokens included; ``None`` keeps everything), tokenizing only a bounded head of
    a long record (:func:`tokenize_head`); no padding is added, so each result is as long as its record's tokens.
    ``add_special_tokens`` follows the tokenizer's own convention (``[CLS] ... [SEP]`` for BERT, the template of a
    trained BPE, nothing for GPT-2).
    """
    _check_fast(tokenizer)
    if max_length is not None and max_length < 1:
        raise ConfigError(fmt("max_length", "a positive integer or None", max_length))
    records = list(records)
    out: list[EncodedRecord] = []
    for lo in range(0, len(records), batch_size):
        chunk = records[lo:lo + batch_size]
        enc = tokenize_head(tokenizer, [r.text for r in chunk], max_length=max_length,
                            add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                            return_special_tokens_mask=True, return_attention_mask=True)
        for k, rec in enumerate(chunk):
            offsets = [tuple(o) for o in enc["offset_mapping"][k]]
            special = enc["special_tokens_mask"][k]
            idx = token_span_index(offsets, rec.spans, special=special)
            last = max((b for (a, b), sp in zip(offsets, special) if not sp and b > a), default=0)
            out.append(EncodedRecord(
                id=rec.id, input_ids=list(enc["input_ids"][k]), attention_mask=list(enc["attention_mask"][k]),
                sensitive=[j != NO_SPAN for j in idx],
                span_label=[rec.spans[j].label if j != NO_SPAN else None for j in idx],
                span_index=idx, offsets=offsets,
                truncated=(max_length is not None and len(offsets) >= max_length
                           and _NON_SPACE.search(rec.text, last) is not None), meta=rec.meta))
    return out
