"""Numeric cells are plain ASCII decimal (`sim.traces._io.plain`): Python's literal forms that ``int()`` and
``float()`` also take ('1_000', full-width '１０') are refused, naming the cell, on the readers' fast paths too."""

from __future__ import annotations

import numpy as np
import pytest

from sim.traces import TraceFormatError, read_trace

CANONICAL = "request_id,arrival_s,prompt_tokens,output_tokens\n"


@pytest.mark.parametrize("name, text, field, value", [
    # (each was read: 1_000 as 1000, １０ as 10; 1,000 and 1e3 were refused)
    ("c.csv", CANONICAL + "a,0,1_000,5\n", "prompt_tokens", "'1_000'"),
    ("c.csv", CANONICAL + "a,0,１０,5\n", "prompt_tokens", "'１０'"),
    ("c.csv", CANONICAL + "a,1_0.5,10,5\n", "arrival_s", "'1_0.5'"),
    ("c.csv", CANONICAL + "a,0,10,5\nb,１,10,5\n", "arrival_s", "'１'"),
    ("p.csv", CANONICAL[:-1] + ",priority,hash_ids\na,0,10,5,1_0,\n", "priority", "'1_0'"),
    ("h.csv", CANONICAL[:-1] + ",hash_ids\na,0,10,5,1_0 2\n", "hash_ids", "'1_0 2'"),
    ("az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9,10,5\n2023-11-16 18:17:04.0,1_0,5\n",
     "ContextTokens", "'1_0'"),
    ("az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9,10,5\n2023-11-16 18:17:04.0,10,５\n",
     "GeneratedTokens", "'５'"),
    ("az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9,10,5\n2023-11-16 18:17:0４.0,10,5\n",
     "TIMESTAMP", "malformed timestamp"),
    ("b.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n1,A,10,5,15,API log\n"
              "2,A,1_0,5,15,API log\n", "Request tokens", "'1_0'"),
    ("b.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n1,A,10,5,15,API log\n"
              "1_2,A,10,5,15,API log\n", "Timestamp", "'1_2'"),
    ("v.csv", "num_prefill_tokens,num_decode_tokens\n10,5\n1_0,5\n", "num_prefill_tokens", "'1_0'"),
])
def test_python_literal_forms_of_numbers_are_refused_naming_the_cell(write, name, text, field, value):
    p = write(name, text)
    with pytest.raises(TraceFormatError) as info:
        list(read_trace(p, rng=np.random.default_rng(0)) if name == "v.csv" else read_trace(p))
    assert info.value.field == field and value in info.value.reason
    if "'" in value and "malformed" not in value:
        assert info.value.reason.endswith("(plain ASCII decimal only: no '_' separators, no other scripts' digits)")


def test_plain_decimals_read_as_before(write):
    p = write("c.csv", CANONICAL + "a,1e-05,10,5\nb, 2.5 ,12 ,0\nc,3,10,5\n")  # (an exponent, as repr(float) writes)
    assert [(r.arrival_s, r.prompt_tokens) for r in read_trace(p)] == [(1e-05, 10), (2.5, 12), (3.0, 10)]
    p = write("j.jsonl", '{"arrival_s": "1_0", "prompt_tokens": 1, "output_tokens": 1}\n')
    with pytest.raises(TraceFormatError, match="field 'arrival_s': expected a finite non-negative number of seconds, "
                                               "got '1_0' \\(plain ASCII"):
        list(read_trace(p))
