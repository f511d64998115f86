"""Index lists named on the command line: units, channels ('0-15,42', 'all').

A list is parsed into ranges first and checked arithmetically: '0-999999999' costs two
integers, never a billion-item list. Only a list known to fit (inside `count`, or small) is
expanded.
"""

from __future__ import annotations

from cnntool.errors import CnnToolError

# Without the count to check against, a list may name at most this many indices (no layer
# has a million channels; a typo with one more digit must not eat the memory).
MAX_UNCHECKED = 1 << 20


def parse_ranges(text: str | None, what: str = "index") -> tuple[tuple[int, int], ...] | None:
    """'0-15,42' -> ((0, 15), (42, 42)): inclusive ranges in the order given; 'all' or None ->
    None (every one). Syntax only: a CnnToolError sentence for anything else. Cheap enough to
    call before a model is loaded."""
    if text is None or text.strip().lower() == "all":
        return None
    ranges: list[tuple[int, int]] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if "-" in part[1:]:
                low, high = (int(v) for v in part.split("-", 1))
            else:
                low = high = int(part)
            if low < 0 or high < low:
                raise ValueError
            ranges.append((low, high))
    except ValueError:
        raise CnnToolError(
            f"'{text}' is not a list of indices like 0-15,42 (ranges go from low "
            "to high; numbers start at 0)"
        ) from None
    if not ranges:
        raise CnnToolError(f"the {what} list '{text}' is empty")
    return tuple(ranges)


def parse_indices(
    text: str | None, count: int | None = None, what: str = "index"
) -> list[int] | None:
    """'0-15,42' -> [0, …, 15, 42]: unique indices in the order first named; 'all' or None ->
    None (every one).

    With `count` (how many there are, e.g. a layer's channels), every index must be below it:
    otherwise a CnnToolError sentence names the valid range. Without it, a list may name at
    most MAX_UNCHECKED indices; check against the count once it is known.
    """
    ranges = parse_ranges(text, what)
    if ranges is None:
        return None
    if count is not None:
        highest = max(high for _, high in ranges)
        if highest >= count:
            valid = "none" if count <= 0 else f"0-{count - 1}"
            raise CnnToolError(f"{what} {highest} does not exist: there are {count} ({valid})")
    else:
        named = sum(high - low + 1 for low, high in ranges)
        if named > MAX_UNCHECKED:
            raise CnnToolError(
                f"'{text}' names {named:,} {what} numbers; at most {MAX_UNCHECKED:,} can be chosen"
            )
    # every range now lies inside [0, count) (or the total is small): expanding is bounded
    chosen: dict[int, None] = {}
    for low, high in ranges:
        chosen.update(dict.fromkeys(range(low, high + 1)))
    return list(chosen)
