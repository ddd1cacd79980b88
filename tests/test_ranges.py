"""Read planning: merging byte ranges."""

from aefsql.storage.ranges import merge_ranges


def test_adjacent_and_near_ranges_merge_and_far_ones_do_not():
    merged = merge_ranges([(0, 10), (10, 20), (25, 30), (100, 110)], max_gap=5)
    assert [(m.start, m.end) for m in merged] == [(0, 30), (100, 110)]
    assert merged[0].members == ((0, 10), (10, 20), (25, 30))


def test_merged_reads_stay_under_the_size_cap():
    merged = merge_ranges([(i * 10, i * 10 + 10) for i in range(10)], max_gap=0, max_request=35)
    assert [(m.start, m.end) for m in merged] == [(0, 30), (30, 60), (60, 90), (90, 100)]


def test_duplicates_and_order_do_not_matter():
    merged = merge_ranges([(50, 60), (0, 10), (50, 60)], max_gap=0)
    assert [(m.start, m.end, m.members) for m in merged] == [
        (0, 10, ((0, 10),)),
        (50, 60, ((50, 60),)),
    ]


def test_slice_returns_each_member():
    (m,) = merge_ranges([(3, 5), (7, 9)], max_gap=10)
    data = bytes(range(3, 9))
    assert m.slice(data, (3, 5)) == bytes([3, 4]) and m.slice(data, (7, 9)) == bytes([7, 8])
