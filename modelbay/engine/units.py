"""Human-readable units shared by replies and progress messages: counts, bytes, durations."""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["ago", "human_bytes", "human_bytes_apart", "human_count", "number", "plural"]


_BYTE_UNITS = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


def _scaled(n: float, units: tuple[tuple[str, float], ...], sep: str) -> str | None:
    for unit, size in units:
        if n >= size:
            value = n / size
            return f"{value:.1f}{sep}{unit}" if value < 10 else f"{value:.0f}{sep}{unit}"
    return None


def plural(n: int, word: str, many: str | None = None) -> str:
    """A count with its noun agreeing: `1 vote`, `0 votes`, `1,204 answers`; `many` for irregular plurals
    (`plural(2, "person", "people")`); the noun alone may be a phrase (`plural(1, "earlier hour")`)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def number(value: float, decimals: int = 0, *, sign: bool = False) -> str:
    """A figure with thousands separators and a real minus sign (U+2212), so a negative figure never reads as a
    dash: `2,133`, `−133`, `+4.2` (sign=True); a figure that rounds to zero has no sign."""
    shown = f"{abs(value):,.{decimals}f}"
    if float(shown.replace(",", "")) == 0:
        return shown
    return ("−" if value < 0 else "+" if sign else "") + shown


def human_count(n: int | None) -> str:
    """Format a parameter count: 494M, 7.6B."""
    if n is None:
        return "?"
    return _scaled(n, (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)), "") or str(n)


def human_bytes(n: int | float | None) -> str:
    """Format a size in bytes with decimal units: 988 MB, 15.2 GB."""
    if n is None:
        return "?"
    return _scaled(n, _BYTE_UNITS, " ") or f"{int(n)} B"


def human_bytes_apart(*sizes: int) -> list[str]:
    """Format sizes in bytes in one unit with enough decimals (up to 3) that unequal sizes read unequal.

    12,600,000 and 8,400,000 read `12.6 MB` and `8.4 MB`; sizes no 3 decimals tell apart are given in bytes
    (`1,000,000,001 B`), so a comparison the reader is asked to make can always be made.
    """
    largest = max(sizes, default=0)
    unit, size = next(((u, s) for u, s in _BYTE_UNITS if largest >= s), ("B", 1))
    if unit != "B":
        for decimals in (1, 2, 3):
            shown = [f"{n / size:.{decimals}f} {unit}" for n in sizes]
            if all((a == b) == (x == y) for a, x in zip(shown, sizes, strict=True)
                   for b, y in zip(shown, sizes, strict=True)):
                return shown
    return [f"{n:,} B" for n in sizes]


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """Format how long ago something happened: 5s, 3m, 2h, 4d."""
    if when is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
