"""Pure read planning: merge nearby byte ranges of one file into fewer requests."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_GAP = 64 * 1024  # bytes wasted to save a request: ~1 ms of transfer on a fast link
# Big enough to amortise a request, small enough that a wave's reads run side by side.
DEFAULT_MAX_REQUEST = 4 * 1024 * 1024


@dataclass(frozen=True)
class MergedRead:
    start: int
    end: int
    members: tuple[tuple[int, int], ...]  # the (start, end) ranges this read serves

    def slice(self, data: bytes, member: tuple[int, int]) -> bytes | memoryview:
        """The member's bytes out of the read's: the read itself, or a view of it (copying
        every block out of a merged read would cost as much as reading it)."""
        if member == (self.start, self.end):
            return data
        return memoryview(data)[member[0] - self.start : member[1] - self.start]


def merge_ranges(
    ranges: list[tuple[int, int]],
    max_gap: int = DEFAULT_MAX_GAP,
    max_request: int = DEFAULT_MAX_REQUEST,
) -> list[MergedRead]:
    """Sort and merge [start, end) ranges whose gap is at most `max_gap`, keeping each merged
    read at most `max_request` bytes (a single larger range is read as it is)."""
    merged: list[MergedRead] = []
    start = end = None
    members: list[tuple[int, int]] = []
    for r in sorted(set(ranges)):
        if start is not None and r[0] - end <= max_gap and max(end, r[1]) - start <= max_request:
            end = max(end, r[1])
            members.append(r)
            continue
        if start is not None:
            merged.append(MergedRead(start, end, tuple(members)))
        start, end, members = r[0], r[1], [r]
    if start is not None:
        merged.append(MergedRead(start, end, tuple(members)))
    return merged
