"""Checks at the boundary: every public function and command-line option validates what it is given where it enters,
and says what is wrong in words a user can act on.

``InputError`` (a ``ValueError``) is the one exception for input a user can fix; the command line prints its message
and exits with status 2. The ``check_*`` helpers return the value (converted where that is safe) or raise it.

>>> check_number(0.5, "opacity", low=0, high=1)
0.5
>>> check_int(3, "top_k", low=1)
3
>>> check_text("  what colour ?  ", "question")
'what colour ?'
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile


class InputError(ValueError):
    """Input a user can fix: a bad argument, option, file or field. The message says which and what to do."""


def check_text(value, what: str = "text") -> str:
    """One non-empty string (stripped). A list where one text belongs is refused, naming the way to batch."""
    if isinstance(value, (list, tuple)):
        raise InputError(f"{what} must be one string, got a {type(value).__name__} of {len(value)}: to ask several, "
                         "pass a list of dicts, one per example")
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string, got {type(value).__name__} ({_short(value)})")
    if not value.strip():
        raise InputError(f"{what} is empty: give some words")
    return value.strip()


def check_texts(values, what: str = "texts", unique: bool = False) -> list[str]:
    """A non-empty list of non-empty strings; one string where a list belongs is refused (it is not split)."""
    if isinstance(values, str):
        raise InputError(f"{what} must be a list of strings, got one string {values!r}: pass [{values!r}] (or "
                         f"several, e.g. [{values!r}, 'another'])")
    if not isinstance(values, (list, tuple)):
        raise InputError(f"{what} must be a list of strings, got {type(values).__name__}")
    if not values:
        raise InputError(f"{what} is empty: give at least one")
    texts = [check_text(value, f"{what}[{index}]") for index, value in enumerate(values)]
    if unique:
        repeated = sorted({text for text in texts if texts.count(text) > 1})
        if repeated:
            raise InputError(f"{what} repeats {', '.join(map(repr, repeated))}: give each once")
    return texts


def check_number(value, name: str, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """A finite real number within [low, high] (or (low, high] with ``low_open``), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {type(value).__name__} ({_short(value)})")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise InputError(f"{name} must be {'above' if low_open else 'at least'} {low:g}, got {value:g}")
    if high is not None and value > high:
        raise InputError(f"{name} must be at most {high:g}, got {value:g}")
    return value


def check_int(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """A whole number within [low, high]; floats with a fraction, strings and booleans are refused."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be a whole number, got {value}")
    if not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
            value = int(value)
        else:
            raise InputError(f"{name} must be a whole number, got {type(value).__name__} ({_short(value)})")
    value = int(value)
    if low is not None and value < low:
        raise InputError(f"{name} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise InputError(f"{name} must be at most {high}, got {value}")
    return value


def check_choice(value, name: str, choices) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(str, choices))}; got {_short(value)}")
    return value


def check_no_extra(options: dict, where: str, accepted=()) -> None:
    """Refuse keyword options a function would otherwise ignore."""
    if options:
        known = f"; it takes {', '.join(accepted)}" if accepted else ""
        raise InputError(f"{where} does not take {', '.join(sorted(options))}{known}")


def write_atomically(path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and move it into place: a failure never leaves a half-written
    file, nor destroys an earlier one."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".vle-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def read_json(path, what: str = "JSON file"):
    """The parsed JSON of a file, or an error that names the file and the line of a syntax error."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputError(f"the {what} {path} is a folder, not a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise InputError(f"the {what} {path} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise InputError(f"the {what} {path} is not valid JSON: {error.msg} at line {error.lineno}, column "
                         f"{error.colno}") from None
    except ValueError as error:  # NaN / Infinity, refused by _refuse_constant
        raise InputError(f"the {what} {path} holds {error}, which is not a JSON number") from None


def _refuse_constant(name: str):
    raise ValueError(name)


def strict_json(value):
    """``value`` with NaN and infinities as None (recursively), so ``json.dumps(..., allow_nan=False)`` holds."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0:  # numpy scalars
        return strict_json(value.item())
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy arrays
        return strict_json(value.tolist())
    return value


def dumps(value, indent: int | None = 2) -> str:
    """Strict JSON text: NaN and infinities become null, never the non-JSON NaN / Infinity."""
    return json.dumps(strict_json(value), indent=indent, allow_nan=False)


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
