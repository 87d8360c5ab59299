"""read_profile: every malformed file refused, naming the file, the row and the field (not read as something else)."""

from __future__ import annotations

import json
import re

import pytest

from controlplane.hardware.profile_format import PROFILE_FORMAT, read_profile, write_profile

ROW = {"num_prefill_tokens": 16, "num_prefill_seqs": 1, "num_decode_seqs": 2, "sum_decode_context": 40,
       "sum_prefill_context": 0, "iteration_s": 0.01}
META = {"model": "tiny-llama", "device": "cpu", "batching": "padded"}


def profile(tmp_path, rows=None, **meta):
    doc = {"format": PROFILE_FORMAT, **META, **meta, "rows": [ROW, ROW] if rows is None else rows}
    path = tmp_path / "p.json"
    path.write_text(json.dumps({k: v for k, v in doc.items() if v is not ...}))
    return path


@pytest.mark.parametrize(("change", "message"), [
    ({"model": ...}, "profile metadata needs 'model' (a non-empty string), got None"),  # accepted without
    ({"model": None}, "profile metadata needs 'model' (a non-empty string), got None"),
    ({"model": ""}, "profile metadata needs 'model' (a non-empty string), got ''"),
    ({"device": ...}, "profile metadata needs 'device'"),
    ({"batching": "paddded"}, "batching='paddded' must be one of padded, unpadded"),  # unpadded pricing, unsaid
    ({"rows": {"a": 1}}, "rows must be a list of rows, got dict"),  # "row 1 (1-based): expected 6 values, got 1"
    ({"rows": [ROW, {**ROW, "iteration_s": "0.01"}]}, "row 2 (1-based): iteration_s='0.01' must be a number"),
    ({"rows": [ROW, {**ROW, "iteration_s": True}]}, "row 2 (1-based): iteration_s=True must be a number"),
    ({"rows": [ROW, {**ROW, "num_decode_seqs": 2.5}]}, "row 2 (1-based): num_decode_seqs=2.5 must be a whole number"),
    ({"rows": [ROW, [16, 1, 2.5, 40, 0, 0.01]]}, "row 2 (1-based): num_decode_seqs=2.5 must be a whole number"),
    ({"rows": [ROW, 7]}, "row 2 (1-based): expected an object of"),
    ({"rows": [ROW, {**ROW, "iteration_s": float("nan")}]}, "row 2 (1-based): iteration_s=nan must be"),
    # inconsistent counts were fitted as if they cost something; 1e300 s overflowed the fit
    ({"rows": [ROW, {**ROW, "num_decode_seqs": 0, "sum_decode_context": 500}]},
     "row 2 (1-based): sum_decode_context=500 with num_decode_seqs=0"),
    ({"rows": [ROW, {**ROW, "num_prefill_tokens": 0, "num_prefill_seqs": 0, "sum_prefill_context": 64}]},
     "row 2 (1-based): sum_prefill_context=64 with num_prefill_seqs=0"),
    ({"rows": [ROW, {**ROW, "padded_prefill_tokens": 1}]}, "row 2 (1-based): padded_prefill_tokens=1 is below num_prefill_tokens=16"),
    ({"rows": [ROW, {**ROW, "padded_decode_context": 39}]}, "row 2 (1-based): padded_decode_context=39 is below sum_decode_context=40"),
    ({"rows": [ROW, {**ROW, "iteration_s": 1e300}]}, "row 2 (1-based): iteration_s=1e+300 is longer than an iteration can take"),
])
def test_a_malformed_profile_is_refused_naming_the_file(tmp_path, change, message):
    rows = change.pop("rows", None)
    path = profile(tmp_path, rows, **change)
    with pytest.raises(ValueError, match="^" + re.escape(f"{path}: {message}")):
        read_profile(path)


def test_a_well_formed_profile_reads_and_whole_floats_are_counts(tmp_path):
    rows, meta = read_profile(profile(tmp_path, [ROW, {**ROW, "num_decode_seqs": 2.0}, [16, 1, 2, 40, 0, 0.02]],
                                      batching="unpadded"))
    assert rows[1]["num_decode_seqs"] == 2 and rows[2]["iteration_s"] == 0.02 and meta["batching"] == "unpadded"


def test_a_profile_saved_with_a_utf8_byte_order_mark_reads(tmp_path):
    # (refused as "not JSON: Unexpected UTF-8 BOM", where a config with one reads)
    path = profile(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    rows, meta = read_profile(path)
    assert len(rows) == 2 and meta["model"] == "tiny-llama"


def test_write_profile_refuses_what_read_profile_would(tmp_path):
    with pytest.raises(ValueError, match="batching='padd' must be one of"):
        write_profile(tmp_path / "x.json", [ROW], {**META, "batching": "padd"})
    with pytest.raises(ValueError, match=r"row 1 \(1-based\): iteration_s='1' must be a number"):
        write_profile(tmp_path / "x.json", [{**ROW, "iteration_s": "1"}], META)


@pytest.mark.parametrize("key,value", [("num_decode_seqs", 1.5), ("num_prefill_tokens", 16.25),
                                       ("padded_decode_context", 40.5)])
def test_write_profile_refuses_a_fractional_count_as_read_profile_does(tmp_path, key, value):
    # num_decode_seqs 1.5 was written as 1 (a file read_profile accepted, unlike the row it was given)
    with pytest.raises(ValueError, match=re.escape(f"row 1 (1-based): {key}={value!r} must be a whole number")):
        write_profile(tmp_path / "x.json", [{**ROW, key: value}], META)
    assert not (tmp_path / "x.json").exists()
    written, _ = read_profile(write_profile(tmp_path / "y.json", [{**ROW, "num_decode_seqs": 2.0}], META))
    assert written[0]["num_decode_seqs"] == 2 and isinstance(written[0]["num_decode_seqs"], int)


def test_a_mean_row_rounds_its_token_counts_but_not_its_sequence_counts(tmp_path):
    # a calibration's mean row per shape (it says how many iterations in `samples`) averages contexts
    # within a fraction of an octave: 45.8 is its mean, not a typo; its sequence counts are the shape's own
    mean = {**ROW, "sum_decode_context": 45.8, "samples": 5.0}
    rows, _ = read_profile(write_profile(tmp_path / "m.json", [mean], META))
    assert rows[0]["sum_decode_context"] == 46 and rows[0]["samples"] == 5.0
    with pytest.raises(ValueError, match=re.escape("row 1 (1-based): num_decode_seqs=1.5 must be a whole number")):
        write_profile(tmp_path / "n.json", [{**mean, "num_decode_seqs": 1.5}], META)


def test_unknown_row_keys_are_warned_not_dropped_silently(tmp_path):
    """A typo (``sampels``) lost the rows' sample weights unsaid; metadata may keep other keys, rows not."""
    from controlplane.hardware.profile_format import ProfileWarning

    path = profile(tmp_path, [{**ROW, "sampels": 50}, {**ROW, "sampels": 50, "latency_ms": 10.0}], engine="vllm")
    with pytest.warns(ProfileWarning) as caught:
        rows, meta = read_profile(path)
    (said,) = [str(w.message) for w in caught]
    assert said.startswith(f"{path}: unknown row key(s) dropped: 'sampels' in 2 row(s), first row 1 (did you mean "
                           "'samples'?); 'latency_ms' in 1 row(s), first row 2; a row's keys are"), said
    assert "samples" not in rows[0] and meta["engine"] == "vllm"
