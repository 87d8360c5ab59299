"""Incremental detokenization and stop handling for streamed output.

Streaming must never emit text it may later have to take back: half a UTF-8 character (a byte
token on its own decodes to U+FFFD), the first tokens of a stop token sequence, or the first
characters of a stop string. So text is held back until it is safe, and the concatenation of all
deltas is exactly the request's final text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controlplane.live.sampling import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, StopCondition

_REPLACEMENT = "\ufffd"
_PROMPT_CONTEXT = 5  # prompt tokens decoded with the output so leading-space rules apply as in the full text


class IncrementalDetokenizer:
    """Turns a growing token list into text deltas (the prefix/read-offset scheme used by vLLM/TGI).

    Decoding a window that starts a few tokens back keeps tokenizers that render word starts
    differently at the beginning of a string (SentencePiece) consistent with a full decode.
    """

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int] = ()) -> None:
        self._tokenizer = tokenizer
        self._tokens: list[int] = list(prompt_ids[-_PROMPT_CONTEXT:])
        self._prefix_offset = 0
        self._read_offset = len(self._tokens)

    def push(self, token_ids: Sequence[int]) -> str:
        """Add tokens; return the text that is now final (may be empty while a character is incomplete)."""
        self._tokens.extend(token_ids)
        return self._advance(final=False)

    def flush(self) -> str:
        """Return whatever text is left, complete or not (the request is over)."""
        return self._advance(final=True)

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _advance(self, final: bool) -> str:
        if self._read_offset == len(self._tokens):
            return ""
        prefix_text = self._decode(self._tokens[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._tokens[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or (not final and new_text.endswith(_REPLACEMENT)):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._tokens)
        return new_text[len(prefix_text) :]


class OutputStream:
    """Per-request output state: generated ids, finish detection, and safe text deltas."""

    def __init__(
        self, tokenizer: Any, prompt_ids: Sequence[int], stop: StopCondition, eos_ids: Sequence[int], max_new_tokens: int
    ) -> None:
        self.token_ids: list[int] = []
        self.text = ""  # the text streamed so far (the concatenation of all deltas)
        self.finish_reason: str | None = None
        self._detok = IncrementalDetokenizer(tokenizer, prompt_ids)
        self._eos = frozenset(eos_ids)
        self._stop_seqs = stop.stop_token_sequences
        self._stop_strings = stop.stop_strings
        self._max_new = max_new_tokens
        self._token_holdback = max((len(s) for s in self._stop_seqs), default=1) - 1
        self._char_holdback = max((len(s) for s in self._stop_strings), default=1) - 1
        self._pushed = 0  # tokens handed to the detokenizer
        self._pending = ""  # decoded text not yet streamed (held back for stop strings)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def append(self, token_id: int) -> str:
        """Record one generated token; return the text delta to stream (sets ``finish_reason`` when done)."""
        if self.finished:
            raise RuntimeError("request already finished")
        self.token_ids.append(token_id)
        reason, visible = self._token_stop()
        if reason is None:
            visible = len(self.token_ids) - self._token_holdback
        if visible > self._pushed:
            self._pending += self._detok.push(self.token_ids[self._pushed : visible])
            self._pushed = visible
        if reason is not None:
            self._pending += self._detok.flush()
        stop_at = self._find_stop_string()
        if stop_at is not None:
            reason = FINISH_STOP
            self._pending = self._pending[:stop_at]
        if reason is None:
            safe = len(self._pending) - self._char_holdback
            delta, self._pending = (self._pending[:safe], self._pending[safe:]) if safe > 0 else ("", self._pending)
        else:
            delta, self._pending = self._pending, ""
        self.text += delta
        self.finish_reason = reason
        return delta

    def _token_stop(self) -> tuple[str | None, int]:
        """(reason, number of tokens whose text belongs in the output) from token-level stops."""
        n = len(self.token_ids)
        if self.token_ids[-1] in self._eos:
            return FINISH_EOS, n - 1
        for seq in self._stop_seqs:
            if n >= len(seq) and tuple(self.token_ids[-len(seq) :]) == seq:
                return FINISH_STOP, n - len(seq)
        if n >= self._max_new:
            return FINISH_LENGTH, n
        return None, n

    def _find_stop_string(self) -> int | None:
        """Index in ``_pending`` where the earliest stop string starts, if any is complete."""
        hits = [i for i in (self._pending.find(s) for s in self._stop_strings) if i >= 0]
        return min(hits) if hits else None
