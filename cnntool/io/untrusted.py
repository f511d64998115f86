"""User strings on their way out: to a terminal, into a CSV cell, into a matplotlib text.

A path, a class name from `--classes` or a checkpoint, a layer name or an exception's text is
data, never an instruction to whatever shows it:

- `printable`: for a terminal. Control characters go (C0 but newline and tab, DEL, C1), and so
  does every escape sequence whole (CSI colours, OSC titles and hyperlinks, DCS...), so a name
  can neither style, link, retitle nor rewrite the terminal. Rich markup is not this module's
  business: cnntool.cli.console and io.records.table hand user text to rich as `Text`, which
  rich never reads as markup.
- `csv_cell`: for a spreadsheet. A text cell that starts with = + - @, a tab or a carriage return
  gets a leading apostrophe (OWASP's rule against CSV injection), unless it is a plain number
  such as -0.5, which stays a number. Control characters go, as for a terminal.
- `plot_text`: for matplotlib. `$` is escaped, so a name like `$\\frac{0}{$` is drawn as typed
  instead of being parsed as math text (and failing); control characters go.
"""

from __future__ import annotations

import re

# an escape sequence, whole: CSI (ESC [ ... final byte), a string sequence (OSC ESC ], DCS ESC P,
# SOS ESC X, PM ESC ^, APC ESC _ ... up to BEL or ST, or to the end of the text when it is not
# ended), or a two-character escape (ESC and one more); then any other control character
_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\s\S]?"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|nan)")


def printable(text: object) -> str:
    """`text` as a string a terminal shows as it is: escape sequences and control characters
    (but newline and tab) removed."""
    text = str(text)
    if text.isprintable():  # the common case: nothing to remove (newline and tab are not)
        return text
    return _CONTROL.sub("", _SEQUENCE.sub("", text))


def csv_cell(text: str) -> str:
    """A CSV cell that a spreadsheet reads as text, never as a formula: `=cmd|' /C calc'!A0`
    -> `'=cmd|' /C calc'!A0`; `-0.5` and `-3` stay numbers. Control characters other than
    newline and tab are removed (the cell may be read on a terminal); a carriage return at the
    start counts as a formula start all the same."""
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + printable(text)
    return printable(text)


def plot_text(text: object) -> str:
    """`text` for a matplotlib title, label, legend entry or tick label, drawn literally: `$`
    escaped (matplotlib then draws a plain `$`, never math text; a `\\$` that was already there
    stays as typed), control characters removed."""
    return printable(text).replace("$", r"\$")
