"""Train a small byte-level BPE tokenizer and wrap it as a Hugging Face fast tokenizer.

Byte-level BPE (as in GPT-2 and Pythia) never produces unknown tokens: any UTF-8 text is representable. The tokenizer
adds a beginning-of-sequence token in front of every text (so the first real token is predicted from a context, as
Llama does) and nothing at the end, so that a prompt such as ``"My name is"`` can be continued by generation.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BOS = "<|endoftext|>"
PAD = "<|pad|>"
CLS, SEP, MASK = "[CLS]", "[SEP]", "[MASK]"


def train_bpe(texts: Iterable[str], *, vocab_size: int, encoder: bool = False) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``.

    ``encoder=False`` (causal LM): specials ``<|endoftext|>`` (BOS = EOS) and ``<|pad|>``; template ``BOS $A``.
    ``encoder=True`` (BERT-style classifier): specials ``[CLS] [SEP] <|pad|> [MASK]``; template ``[CLS] $A [SEP]``.
    ``vocab_size`` counts the 256 byte symbols and the special tokens.
    """
    specials = [CLS, SEP, PAD, MASK] if encoder else [BOS, PAD]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    if encoder:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B {SEP}",
            special_tokens=[(CLS, tok.token_to_id(CLS)), (SEP, tok.token_to_id(SEP))])
        return PreTrainedTokenizerFast(tokenizer_object=tok, cls_token=CLS, sep_token=SEP, pad_token=PAD,
                                       mask_token=MASK, unk_token=None)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS, pad_token=PAD,
                                   unk_token=None)
