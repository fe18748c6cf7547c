"""``argparse`` types for numbers with a range, so a command line refuses an out-of-range value
the way it refuses a malformed one: ``error: argument --confidence-threshold: 2.0 is not in the
range [0, 1]`` and exit status 2, before anything runs.

    parser.add_argument("--confidence-threshold", type=float_range(0.0, 1.0))
    parser.add_argument("--num-gpus", type=int_range(1))
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["float_range", "int_range"]


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if maximum is None:
        return f"at least {minimum:g}"
    if minimum is None:
        return f"at most {maximum:g}"
    return f"in the range [{minimum:g}, {maximum:g}]"


def int_range(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An ``argparse`` type: an integer in ``[minimum, maximum]`` (None: unbounded side).

    Raises (in the returned function):
        argparse.ArgumentTypeError: not an integer, or out of the range (both named).
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{value} is not {_bounds(minimum, maximum)}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


def float_range(
    minimum: float | None = None, maximum: float | None = None
) -> Callable[[str], float]:
    """An ``argparse`` type: a finite number in ``[minimum, maximum]`` (None: unbounded side).

    Raises (in the returned function):
        argparse.ArgumentTypeError: not a number, NaN or infinite, or out of the range.
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{value:g} is not {_bounds(minimum, maximum)}")
        return value

    parse.__name__ = "number"
    return parse
