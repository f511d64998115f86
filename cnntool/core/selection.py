"""Index lists named on the command line: units, channels ('0-15,42', 'all')."""
from __future__ import annotations

from cnntool.errors import CnnToolError


def parse_indices(text: str | None, count: int | None = None) -> list[int] | None:
    """'0-15,42' -> [0, …, 15, 42]; 'all' or None -> None (every one)."""
    if text is None or text.strip().lower() == "all":
        return None
    chosen: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if "-" in part[1:]:
                low, high = (int(v) for v in part.split("-", 1))
                if high < low:
                    raise ValueError
                chosen.extend(range(low, high + 1))
            else:
                chosen.append(int(part))
    except ValueError:
        raise CnnToolError(f"'{text}' is not a list of indices like 0-15,42") from None
    if not chosen:
        raise CnnToolError("the index list is empty")
    return list(dict.fromkeys(chosen))
