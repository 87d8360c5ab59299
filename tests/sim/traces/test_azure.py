import csv
import datetime as dt
import math

import pytest

from sim.traces import TraceFormatError, bundled_trace_path, detect_format, read_trace
from sim.traces.azure import read_azure

HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\r\n"


def _reference_arrivals(path):
    """Independent oracle: datetime parsing (microsecond resolution) of every row."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    stamps = [dt.datetime.strptime(r[0][:26], "%Y-%m-%d %H:%M:%S.%f") for r in rows]
    return rows, [(s - stamps[0]).total_seconds() for s in stamps]


def test_bundled_azure_code_trace():
    path = bundled_trace_path("azure_code")
    assert detect_format(path) == "azure"
    reqs = list(read_trace(path))
    rows, ref = _reference_arrivals(path)
    assert len(reqs) == len(rows) == 8819
    assert reqs[0].arrival_s == 0.0
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(reqs, reqs[1:]))
    assert [r.request_id for r in reqs] == [str(i) for i in range(len(reqs))]
    assert max(abs(r.arrival_s - t) for r, t in zip(reqs, ref)) < 1e-6  # 100 ns digits beyond us
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(int(c), int(g)) for _, c, g in rows]
    span = reqs[-1].arrival_s
    assert 3435 < span < 3437  # the README's 3,436 s
    assert all(r.hash_ids == () and r.model is None for r in reqs)


def test_first_rows_exact(write):
    p = write("t.csv", HEADER + "2023-11-16 18:17:03.9799600,4808,10\r\n2023-11-16 18:17:04.0319600,3180,8\r\n"
              "2023-11-16 18:18:00.0000001,1,2\r\n2023-11-17 00:00:00.0000000,3,4")
    reqs = list(read_azure(p))
    assert [r.request_id for r in reqs] == ["0", "1", "2", "3"]
    assert reqs[0].arrival_s == 0.0
    assert reqs[1].arrival_s == pytest.approx(0.052, abs=1e-12)
    assert reqs[2].arrival_s == pytest.approx(56.0200401, abs=1e-9)  # 100 ns resolution kept
    day_end = (dt.datetime(2023, 11, 17) - dt.datetime(2023, 11, 16, 18, 17, 3, 979960)).total_seconds()
    assert reqs[3].arrival_s == pytest.approx(day_end, abs=1e-9)  # crosses midnight


def test_2024_format_case_insensitive_headers_and_time_zone(write):
    p = write("azure2024.csv", "timestamp,contexttokens,generatedtokens\n"
              "2024-05-10 00:00:00.009930+00:00,2162,5\n2024-05-10 00:00:01+00:00,7,1\n"
              "2024-05-10 02:00:02.5+02:00,1,1\n2024-05-10T00:00:03Z,1,1\n")
    assert detect_format(p) == "azure"
    reqs = list(read_trace(p))
    assert [round(r.arrival_s, 6) for r in reqs] == [0.0, 0.99007, 2.49007, 2.99007]
    assert (reqs[0].prompt_tokens, reqs[0].output_tokens) == (2162, 5)


def test_columns_in_any_order_and_extra_columns(write):
    p = write("t.csv", "GeneratedTokens,Extra,TIMESTAMP,ContextTokens\n5,x,2023-11-16 18:17:03.5,10\n6,y,2023-11-16 18:17:04.5,11\n")
    reqs = list(read_trace(p, "azure"))
    assert [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in reqs] == [(0.0, 10, 5), (1.0, 11, 6)]


@pytest.mark.parametrize("row, field, needle", [
    ("2023-11-16 18:17:04.0,3180,abc", "GeneratedTokens", "expected a non-negative integer, got 'abc'"),
    ("2023-11-16 18:17:04.0,-3,1", "ContextTokens", "got '-3'"),
    ("2023-11-16 18:17:04.0,1.5,1", "ContextTokens", "got '1.5'"),
    ("2023-11-16 18:17:xx.0,1,1", "TIMESTAMP", "malformed timestamp"),
    ("2023-13-16 18:17:04.0,1,1", "TIMESTAMP", "malformed timestamp"),
    ("2023-11-16 25:17:04.0,1,1", "TIMESTAMP", "malformed timestamp"),
    ("2023-11-16 18:17:04.0", "ContextTokens", "row has 1 fields"),
    ("2023-11-16 18:17:04.0,1,1,7", "GeneratedTokens", "row has 4 fields, the header 3"),
    ("2023-11-16 18:17:02.0,1,1", "TIMESTAMP", "arrival goes backwards"),
])
def test_bad_rows_name_file_line_and_field(write, row, field, needle):
    p = write("trace.csv", HEADER + "2023-11-16 18:17:03.0,1,1\r\n\r\n" + row + "\r\n")
    with pytest.raises(TraceFormatError) as exc:
        list(read_azure(p))
    e = exc.value
    assert (e.path, e.line, e.field) == (str(p), 4, field)
    assert str(e).startswith(f"{p}:4: field '{field}': ")
    assert needle in str(e)
    assert isinstance(e, ValueError)


def test_a_row_past_a_reordered_header_is_an_error(write):
    p = write("t.csv", "GeneratedTokens,Extra,TIMESTAMP,ContextTokens\n5,x,2023-11-16 18:17:03.5,10\n"
                       "6,y,2023-11-16 18:17:04.5,11,12\n")
    with pytest.raises(TraceFormatError, match=r"t\.csv:3: field 'ContextTokens': row has 5 fields, the header 4"):
        list(read_azure(p))


def test_tiny_backwards_jitter_is_clamped(write):
    p = write("t.csv", HEADER + "2023-11-16 18:17:03.0000005,1,1\n2023-11-16 18:17:03.0000000,1,1\n")
    reqs = list(read_azure(p))
    assert reqs[1].arrival_s == reqs[0].arrival_s == 0.0


def test_missing_column_empty_and_header_only(write):
    with pytest.raises(TraceFormatError, match=r"t\.csv:1: field 'GeneratedTokens': missing required column"):
        list(read_azure(write("t.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.0,1\n")))
    with pytest.raises(TraceFormatError, match="empty file"):
        list(read_azure(write("e.csv", "")))
    with pytest.raises(TraceFormatError, match="no data rows"):
        list(read_azure(write("h.csv", HEADER)))


def test_skip_mode_records_errors_and_keeps_ids_stable(write):
    p = write("t.csv", HEADER + "2023-11-16 18:17:03.0,1,1\nbad,1,1\n2023-11-16 18:17:05.0,2,x\n2023-11-16 18:17:06.0,3,3\n")
    reader = read_trace(p, on_error="skip")
    reqs = list(reader)
    assert [(r.request_id, r.arrival_s) for r in reqs] == [("0", 0.0), ("3", 3.0)]
    assert [(e.line, e.field) for e in reader.errors] == [(3, "TIMESTAMP"), (4, "GeneratedTokens")]
    assert reader.skipped == 2
    seen = []
    assert len(list(read_azure(p, on_error=seen.append))) == 2
    assert len(seen) == 2


def test_gzip_input(tmp_path):
    import gzip
    p = tmp_path / "t.csv.gz"
    with gzip.open(p, "wt", newline="") as f:
        f.write(HEADER + "2023-11-16 18:17:03.0,1,1\r\n2023-11-16 18:17:04.0,2,2\r\n")
    assert detect_format(p) == "azure"
    assert [r.arrival_s for r in read_trace(p)] == [0.0, 1.0]


def test_shared_copy_matches_bundled():
    from .conftest import AZURE_SHARED, need
    shared = list(read_trace(need(AZURE_SHARED)))
    bundled = list(read_trace(bundled_trace_path()))
    assert shared == bundled
    assert not math.isnan(bundled[-1].arrival_s)


def test_a_skipped_first_row_whose_timestamp_reads_is_the_time_origin(write):
    """A bad token count does not move the time axis: a window (600, 1200) of a file whose first row
    (18:00) had a bad count picked the 18:20 row, not the 18:10 one."""
    from sim.traces import apply_transforms

    rows = "".join(f"2023-11-16 18:{m}:00,{m},{'x' if m == '00' else 1}\n" for m in ("00", "10", "20", "30"))
    p = write("t.csv", HEADER + rows)
    reader = read_trace(p, on_error="skip")
    assert [(r.request_id, r.arrival_s) for r in apply_transforms(reader, window=(600, 1200))] == [("1", 0.0)]
    assert reader.skipped == 1
    assert [r.arrival_s for r in read_trace(p, on_error="skip")] == [600.0, 1200.0, 1800.0]
    # a row whose timestamp does not read sets nothing; one before the origin goes backwards
    p = write("u.csv", HEADER + "2023-11-16 18:17:bad,1,1\n2023-11-16 18:17:05,1,x\n2023-11-16 18:17:04,1,1\n"
              "2023-11-16 18:17:06.5,1,1\n")
    reader = read_trace(p, on_error="skip")
    assert [(r.request_id, r.arrival_s) for r in reader] == [("3", 1.5)] and reader.skipped == 3
    assert "arrival goes backwards: -1 s is before the previous row's 0 s" in str(reader.errors[2])


def test_one_row_out_of_place_is_named_as_the_likely_cause_of_the_rows_skipped_behind_it(write):
    """Data rows 10 and 500 of the bundled trace swapped: on_error=skip keeps the row far ahead (a
    reader cannot take back a row it gave) and skips the 490 good rows behind it; the first error
    says that one row is the likely cause, and how many rows it cost."""
    from sim.traces import bundled_trace_path

    lines = bundled_trace_path().read_text().splitlines(keepends=True)
    data = lines[1:]
    data[10], data[500] = data[500], data[10]
    reader = read_trace(write("swapped.csv", lines[0] + "".join(data)), on_error="skip")
    assert sum(1 for _ in reader) == len(data) - 490 and reader.skipped == 490
    first = str(reader.errors[0])
    assert ":13: field 'TIMESTAMP': arrival goes backwards:" in first
    assert ("so are the 489 rows after it (to line 502) that were skipped: the row kept before line 13 (the previous "
            "row here) is likely the one out of place, ahead of its neighbours: move that row into order or remove it, "
            "and these rows are read") in first
    assert first.endswith("these rows are read")
    assert "so are" not in str(reader.errors[1])
    rows = "".join(f"2023-11-16 18:17:{s:02d}.0,10,2\r\n" for s in (1, 3, 2, 4, 5))
    lone = read_trace(write("one.csv", HEADER + rows), on_error="skip")
    assert sum(1 for _ in lone) == 4 and "so are" not in str(lone.errors[0])  # one row behind one: no cascade


@pytest.mark.parametrize("rows, line, ts", [
    # (the naive row was taken as UTC: two hours off the +02:00 rows, silently)
    (["2024-05-10 00:00:00.0+02:00", "2024-05-10 00:00:01.0+02:00", "2024-05-10 00:00:02.0"], 4,
     "'2024-05-10 00:00:02.0' has no UTC offset, and the first row's ('2024-05-10 00:00:00.0+02:00') has one"),
    (["2024-05-10 00:00:00.0", "2024-05-10 00:01:01.0Z"], 3,
     "'2024-05-10 00:01:01.0Z' has a UTC offset, and the first row's ('2024-05-10 00:00:00.0') has none"),
    (["2024-05-10 00:00:00.0", "2024-05-10 00:00:00.5", "2024-05-10 00:00:01.0-05:00"], 4, "has a UTC offset"),
])
def test_timestamps_with_and_without_a_utc_offset_in_one_file_are_an_error_where_it_switches(write, rows, line, ts):
    p = write("z.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{t},1,1\n" for t in rows))
    with pytest.raises(TraceFormatError) as info:
        list(read_trace(p))
    assert (info.value.line, info.value.field) == (line, "TIMESTAMP") and ts in info.value.reason
    assert info.value.reason.endswith("give every row an offset, or none")
    p = write("ok.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00.0+02:00,1,1\n"
                        "2024-05-10 00:00:01.0Z,1,1\n")  # (offsets that differ, each given: read as they say)
    assert [r.arrival_s for r in read_trace(p)] == [0.0, 7201.0]


@pytest.mark.parametrize("offset", ["+25:00", "+23:99", "+99:99", "-24:00"])
def test_a_utc_offset_no_time_zone_has_is_a_malformed_timestamp_on_its_row(write, offset):
    # (it was read as given: a row a day off, and the next row's error a misleading "arrival goes backwards")
    p = write("z.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00+05:30,1,1\n"
                       f"2024-05-10 00:00:00.5{offset},1,1\n2024-05-10 00:00:01+05:30,1,1\n")
    with pytest.raises(TraceFormatError) as info:
        list(read_trace(p))
    assert (info.value.line, info.value.field) == (3, "TIMESTAMP")
    assert info.value.reason == f"malformed timestamp '2024-05-10 00:00:00.5{offset}' (offset must be within ±23:59)"
    skipped = read_trace(p, on_error="skip")
    assert [r.arrival_s for r in skipped] == [0.0, 1.0] and skipped.skipped == 1
    ok = write("ok.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00+23:59,1,1\n"
                         "2024-05-10 00:00:00-23:59,1,1\n")  # (the widest offsets there are)
    assert [r.arrival_s for r in read_trace(ok, max_gap_s=math.inf)] == [0.0, 2 * (23 * 3600 + 59 * 60)]
