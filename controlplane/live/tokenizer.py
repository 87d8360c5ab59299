"""A byte-level tokenizer built locally, for random-weight test models.

Random-weight models have no tokenizer to download, yet the worker must still take text in and
give text out. Every byte is one token, so any string round-trips; the ids above the byte range
(up to the model's vocabulary size) become visible ``<|xN|>`` tokens so that whatever id a random
model samples still decodes to some text.
"""

from __future__ import annotations

from functools import lru_cache

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
BYTE_OFFSET = len(SPECIAL_TOKENS)
MIN_VOCAB = BYTE_OFFSET + 256


@lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """The GPT-2 byte-to-printable-char table (the alphabet of the ByteLevel pre-tokenizer)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def build_byte_tokenizer(vocab_size: int = 512):
    """Return a ``PreTrainedTokenizerFast`` with ids: 4 specials, 256 bytes, then filler tokens.

    ``vocab_size`` must match the model's so that every id the model can emit decodes.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB:
        raise ValueError(f"byte tokenizer needs vocab_size >= {MIN_VOCAB}, got {vocab_size}")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for byte, char in _byte_to_unicode().items():
        vocab[char] = BYTE_OFFSET + byte
    # BPE without merges = one token per byte; WordLevel would need a splitter.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    fillers = [AddedToken(f"<|x{i}|>", special=False, normalized=False) for i in range(vocab_size - MIN_VOCAB)]
    if fillers:
        tok.add_tokens(fillers)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )
