"""Human units: sizes a reader must compare are shown precisely enough to tell them apart."""

from __future__ import annotations

import pytest

from modelbay.engine.errors import InsufficientDisk
from modelbay.engine.units import human_bytes_apart


@pytest.mark.parametrize(("sizes", "shown"), [
    ((12_600_000, 8_400_000), ["12.6 MB", "8.4 MB"]),
    ((2_013_000_000, 2_008_400_000), ["2.013 GB", "2.008 GB"]),
    ((1_500_000_000, 1_500_000_000), ["1.5 GB", "1.5 GB"]),
    ((1_000_000_001, 1_000_000_000), ["1,000,000,001 B", "1,000,000,000 B"]),
    ((900, 12), ["900 B", "12 B"]),
    ((5_000_000_000_000, 1_000), ["5.0 TB", "0.0 TB"]),
])
def test_sizes_apart(sizes: tuple[int, ...], shown: list[str]) -> None:
    assert human_bytes_apart(*sizes) == shown


def test_not_enough_disk_shows_a_difference_that_can_be_read() -> None:
    # 12.6 MB needed and 8.4 MB free used to read "needs 0.01 GB ... has 0.01 GB free".
    message = str(InsufficientDisk(12_600_000, 8_400_000, 0, "/store"))
    assert "needs 12.6 MB and /store has 8.4 MB free" in message
    with_margin = str(InsufficientDisk(12_600_000, 2_008_400_000, 2_000_000_000, "/store"))
    assert "needs 13 MB plus a 2.0 GB margin (2.013 GB in all) and /store has 2.008 GB free" in with_margin

