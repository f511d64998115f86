"""Every mistake a user can make becomes a CnnToolError: one clear sentence, exit code 1."""
from __future__ import annotations

import difflib
from typing import Iterable


class CnnToolError(Exception):
    """A failure the user can fix. Its message is one sentence shown without a traceback."""

    exit_code = 1


class ModelLoadError(CnnToolError):
    """A model spec, checkpoint or architecture that cannot be loaded."""


class UntrustedCodeError(ModelLoadError):
    """Loading would execute code from a file, and the user did not say it may."""


class UnknownNameError(CnnToolError):
    """A model, layer, class or sample-set name that does not exist."""


class DataError(CnnToolError):
    """A DATA spec that yields no usable image."""


class InputSizeError(CnnToolError):
    """An input too small (or malformed) for the model."""


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Candidates that look like `name`: those containing it first ('panda' -> 'giant panda'),
    then difflib's look-alikes ('resnet181' -> 'resnet18')."""
    candidates = list(candidates)
    lowered = name.lower()
    containing = [c for c in candidates if lowered and lowered in c.lower()]
    containing.sort(key=lambda c: -difflib.SequenceMatcher(None, lowered, c.lower()).ratio())
    hits = containing[:n]
    for cand in difflib.get_close_matches(name, candidates, n=n, cutoff=0.6):
        if len(hits) >= n:
            break
        if cand not in hits:
            hits.append(cand)
    return hits


def unknown_name(kind: str, name: str, candidates: Iterable[str], hint: str = "") -> UnknownNameError:
    """An UnknownNameError whose sentence names close matches (and where to look)."""
    matches = close_matches(name, candidates)
    msg = f"unknown {kind} '{name}'"
    if matches:
        msg += "; did you mean " + ", ".join(f"'{m}'" for m in matches) + "?"
    if hint:
        msg += f" ({hint})"
    return UnknownNameError(msg)
