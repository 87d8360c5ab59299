"""Incremental detokenization and stop handling, token by token."""

from __future__ import annotations

import pytest

from controlplane.live.sampling import StopCondition
from controlplane.live.streaming import IncrementalDetokenizer, OutputStream
from controlplane.live.tokenizer import build_byte_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_byte_tokenizer(512)


def _stream(tok, text: str, **stop) -> OutputStream:
    return OutputStream(tok, tok("> ").input_ids, StopCondition(eos_token_ids=(2,), **stop), (2,), 1000)


def test_multibyte_characters_are_held_until_complete(tok):
    detok = IncrementalDetokenizer(tok, tok("x").input_ids)
    ids = tok("é世").input_ids  # 2 + 3 bytes, one token each
    deltas = [detok.push([i]) for i in ids]
    assert deltas == ["", "é", "", "", "世"]
    assert detok.flush() == ""


def test_flush_emits_an_incomplete_tail(tok):
    detok = IncrementalDetokenizer(tok)
    assert detok.push(tok("a").input_ids) == "a"
    assert detok.push([4 + 0xE4]) == ""  # a lone lead byte: maybe the start of a character
    assert detok.flush() == "\ufffd"


def test_stop_string_split_across_tokens_is_never_streamed(tok):
    s = _stream(tok, "", stop_strings=("STOP",))
    deltas = [s.append(i) for i in tok("abcST").input_ids]
    assert "".join(deltas) == "ab"  # "cST" could still become "cSTOP": held back (len("STOP") - 1 chars)
    assert s.append(tok("O").input_ids[0]) == "c"
    assert s.append(tok("P").input_ids[0]) == ""
    assert s.finished and s.finish_reason == "stop" and s.text == "abc"


def test_held_text_is_released_when_the_stop_cannot_match(tok):
    s = _stream(tok, "", stop_strings=("STOP",))
    for i in tok("xyST").input_ids:
        s.append(i)
    s.append(tok("!").input_ids[0])
    assert s.text == "xy"  # "ST!" (3 chars) stays held back while running...
    s2 = OutputStream(tok, [], StopCondition(eos_token_ids=(2,), stop_strings=("STOP",)), (2,), 5)
    for i in tok("xyST!").input_ids:
        s2.append(i)
    assert s2.finish_reason == "length" and s2.text == "xyST!"  # ...and all released at the end


def test_eos_token_is_not_text(tok):
    s = _stream(tok, "")
    for i in tok("hi").input_ids:
        s.append(i)
    assert s.append(2) == "" and s.finish_reason == "eos"
    assert s.token_ids[-1] == 2 and s.text == "hi"


def test_stop_token_sequence_holds_back_its_prefix(tok):
    seq = tuple(tok("\n\n").input_ids)
    s = OutputStream(tok, [], StopCondition(eos_token_ids=(), stop_token_sequences=(seq,)), (), 100)
    out = [s.append(i) for i in tok("ab\n").input_ids]
    assert "".join(out) == "ab"  # the "\n" might start the stop sequence
    s.append(seq[1])
    assert s.finish_reason == "stop" and s.text == "ab"


def test_appending_after_finish_is_an_error(tok):
    s = OutputStream(tok, [], StopCondition(eos_token_ids=()), (), 1)
    s.append(50)
    with pytest.raises(RuntimeError):
        s.append(51)


def test_a_stop_string_inside_one_token_s_text_cuts_the_text_there_as_vllm_does(tok):
    """The tester's chat answer '<|x1' for ``"stop": "6"``: the filler token '<|x16|>' (a token of the tiny
    vocabulary, not a special one) holds the stop string, and the text ends where the match starts, as vLLM's
    ``check_stop_strings`` truncates its detokenized text, inside a token's text or not; the stop string is not
    in the text, and the deltas are the text."""
    (filler,) = tok("<|x16|>", add_special_tokens=False).input_ids
    assert filler not in tok.all_special_ids
    s = _stream(tok, "", stop_strings=("6",))
    deltas = [s.append(i) for i in (tok("a").input_ids[0], filler)]
    assert s.finish_reason == "stop" and s.text == "".join(deltas) == "a<|x1"
    assert s.token_ids[-1] == filler  # the token is generated (and counted); only its text is cut
