"""Request traces for the simulator: readers for public LLM-serving traces, one canonical
record (`TraceRequest`), streaming transforms, and a bundled Azure trace. See docs/traces.md.
"""

from .bundled import BUNDLED_TRACES, bundled_trace_path
from .canonical import write_canonical
from .dispatch import FORMAT_OPTIONS, FORMATS, TraceReader, detect_format, parse_options, read_trace
from .errors import TraceFormatError
from .profile_text import format_rate_profile, parse_rate_profile
from .record import TraceRequest
from .transforms import (apply_transforms, cap_lengths, limit, rate_profile, rate_profile_points, repeat,
                         scale_lengths, scale_rate, speed_up, time_window)

__all__ = [
    "TraceRequest",
    "TraceFormatError",
    "TraceReader",
    "read_trace",
    "detect_format",
    "write_canonical",
    "bundled_trace_path",
    "BUNDLED_TRACES",
    "FORMATS",
    "FORMAT_OPTIONS",
    "parse_options",
    "time_window",
    "speed_up",
    "repeat",
    "scale_rate",
    "rate_profile",
    "rate_profile_points",
    "parse_rate_profile",
    "format_rate_profile",
    "limit",
    "scale_lengths",
    "cap_lengths",
    "apply_transforms",
]
