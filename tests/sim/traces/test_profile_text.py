"""Rate profiles as text (sim/traces/profile_text.py): what --rate-profile and sweep specs take, stored runs show."""

import pytest

from sim.traces import format_rate_profile, parse_rate_profile


def test_text_reads_as_points_and_points_write_back_as_the_same_text():
    assert parse_rate_profile("0:1,14400:2") == ((0.0, 1.0), (14400.0, 2.0))
    assert parse_rate_profile(" 0 : 0.5 , 1e3:+2.25,1800:.5 ") == ((0.0, 0.5), (1000.0, 2.25), (1800.0, 0.5))
    assert parse_rate_profile("-60:0") == ((-60.0, 0.0),)
    assert format_rate_profile([(0, 1), (14400, 2.0)]) == "0:1,14400:2"
    odd = [(0.1, 1 / 3), (1e20, 0), (1e21, 7.5)]
    assert format_rate_profile(odd) == "0.1:0.3333333333333333,1e+20:0,1e+21:7.5"
    assert parse_rate_profile(format_rate_profile(odd)) == tuple((float(t), float(f)) for t, f in odd)


@pytest.mark.parametrize("text, message", [
    ("", "--rate-profile: no points; give TIME_S:FACTOR points separated by commas, e.g. 0:1,14400:2"),
    ("0:1,", "--rate-profile: point '' is not TIME_S:FACTOR"),
    ("0:1,3600", "--rate-profile: point '3600' is not TIME_S:FACTOR"),
    ("0:1;5:2", "--rate-profile: point '0:1;5:2': factor '1;5:2' is not a number"),
    ("0:1,14400:x", "--rate-profile: point '14400:x': factor 'x' is not a number"),
    ("1h:2", "--rate-profile: point '1h:2': time '1h' is not a number"),
    ("0:nan", "--rate-profile: point '0:nan': factor 'nan' is not a number"),
    ("\u0661:1", "is not a number"),  # (an Arabic-Indic 1: float() takes it; the option does not)
    ("1_000:1", "time '1_000' is not a number"),
    ("0:-1", "--rate-profile: point '0:-1': factor must be a finite number >= 0, got -1"),
    ("0:1e999", "--rate-profile: point '0:1e999': factor must be a finite number >= 0, got inf"),
    ("0:1,1800:3,1000:2", "--rate-profile: point '1000:2': its time, 1000 s, must be later than the point "
                          "before's (1800 s): points go in time order"),
])
def test_bad_text_is_one_line_naming_the_option_and_the_point(text, message):
    with pytest.raises(ValueError) as raised:
        parse_rate_profile(text, "--rate-profile")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_without_a_name_the_message_starts_with_the_point():
    with pytest.raises(ValueError, match="^point '0:x': factor 'x' is not a number"):
        parse_rate_profile("0:x", "")
    with pytest.raises(ValueError, match="expected text like 0:1,14400:2"):
        parse_rate_profile([(0, 1)])  # type: ignore[arg-type]
