"""The text of command-line option values -> values: sizes, number lists, resize, names, positions.
Each parser takes None to None and raises ValueError with one sentence for anything else."""

from __future__ import annotations

import math
from fractions import Fraction


def parse_size(text: str | None, channels_default: int | None = None):
    """'224', '224x224', '3x224x224' or '3,224,224' -> (C|None, H, W), every size at least 1."""
    if text is None:
        return None
    parts = [p for p in text.lower().replace(",", "x").replace("×", "x").split("x") if p]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2, 3):
        raise ValueError(f"'{text}' is not a size like 224, 224x224 or 3x224x224")
    if any(v < 1 for v in numbers):
        raise ValueError(f"'{text}' has a size below 1 pixel")
    numbers = numbers * 2 if len(numbers) == 1 else numbers
    return tuple(numbers) if len(numbers) == 3 else (channels_default, *numbers)


def parse_floats(text: str | None) -> tuple[float, ...] | None:
    """'0.5,0.5,0.5' or '104/255,117/255,123/255' -> floats; nan and inf are refused (the
    sentence quotes `text`)."""
    if text is None:
        return None
    try:
        return parse_fractions(text)
    except ValueError:
        raise ValueError(
            f"'{text}' is not a comma list of finite numbers like 0.5,0.5,0.5 or 104/255"
        ) from None


def parse_fractions(text: str) -> tuple[float, ...]:
    """A comma list of numbers or fractions ('0.5', '104/255,117/255', '1e-3') -> floats, as
    `parse_eps` reads ε (the double of 8/255 is that of the literal); ValueError otherwise."""
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    try:  # Fraction parses '0.5', '1e-3' and '104/255'; nan and inf are not fractions
        numbers = tuple(float(Fraction(part)) for part in parts)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise ValueError(f"'{text}' is not a comma list of numbers") from None
    if not numbers or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"'{text}' is not a comma list of finite numbers")
    return numbers


def parse_resize(text: str | None) -> int | tuple[int, int] | str | None:
    """'256' -> 256 (the shorter side), '48x64' or '48,64' -> (48, 64) (exactly H×W), 'none'
    -> 'none'; every size at least 1."""
    if text is None or text.lower() == "none":
        return None if text is None else "none"
    parts = text.lower().replace(",", "x").replace("×", "x").split("x")
    try:
        sizes = tuple(int(part) for part in parts)
    except ValueError:
        raise ValueError(f"'{text}' is not a number of pixels, HxW or 'none'") from None
    if len(sizes) not in (1, 2):
        raise ValueError(f"'{text}' is not a number of pixels, HxW or 'none'")
    if min(sizes) < 1:
        raise ValueError("the size must be at least 1 pixel")
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def parse_names(text: str | None) -> list[str] | None:
    """'conv1, layer2.0,,fc' -> ['conv1', 'layer2.0', 'fc']; no name at all -> None."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    return names or None


def parse_position(text: str | None) -> tuple[int, int] | None:
    """'3,5' or '3x5' (row, column) -> (3, 5)."""
    if text is None:
        return None
    try:
        row, col = (int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise ValueError(f"'{text}' is not a position like 3,5 (row,column)") from None
    return row, col


def parse_eps(text: str | None, one: str | None = None):
    """'0.007', '8/255' or a comma list of them ('0,1/255,2/255') -> a tuple of floats; with `one`
    (what the value is, e.g. 'step size'), a single float."""
    if text is None:
        return None
    try:  # Fraction parses '0.007' and '8/255'; float() of it is the double of the literal 8/255
        values = tuple(float(Fraction(part.strip())) for part in str(text).split(","))
    except OverflowError:
        raise ValueError(f"'{text}' is too large a number") from None
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"'{text}' is not a number like 0.007 or 8/255, or a comma list of them"
        ) from None
    if one and len(values) != 1:
        raise ValueError(f"give one {one}")
    return values[0] if one else values


def parse_pool(text: str | None) -> str | int | None:
    """'auto', 'none' or a grid side G ≥ 1 (compare's --pool) -> "auto", "none" or G."""
    if text is None:
        return None
    word = text.strip().lower()
    if word in ("auto", "none"):
        return word
    try:
        side = int(word)
    except ValueError:
        side = 0
    if side < 1:
        raise ValueError(f"'{text}' is not auto, none or a grid side like 4")
    return side
