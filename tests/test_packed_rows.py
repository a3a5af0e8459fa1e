"""The packed depthwise grad-weight's row order in cuda/sm80/mma16.cuh (kPackedRows, kPackedRowOf): rows 0-14 take
each (kw, dy row) pair once, row 15 repeats one (its C row is never read), the inverse table names each pair's row,
and under scripts/packed_rows.py's bank model no A-fragment load of either staged-row pitch takes a second
shared-memory wavefront (the fused kernel's 20-word rows had two-way conflicts in half its loads: docs/perf.md v31)."""

from __future__ import annotations

from helpers import script_module


def _module():
    return script_module("packed_rows")


def test_rows_take_each_pair_once_and_the_inverse_names_them():
    m = _module()
    order, row_of = m.table()
    assert sorted(order[:15]) == m.PAIRS and order[15] in m.PAIRS
    assert all(order[row_of[5 * kw + r]] == (kw, r) for kw, r in m.PAIRS)


def test_loads_are_conflict_free_at_both_pitches():
    m = _module()
    order, _ = m.table()
    assert m.loads(order) == {p: [1] * 8 for p in m.PITCHES}
    # the model sees the conflicts the order removed (m = 5 kw + r' at 20-word rows)
    assert max(m.loads([divmod(i if i < 15 else 10, 5) for i in range(16)])[20]) == 2
