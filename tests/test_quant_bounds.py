"""A declared group_size never sizes an allocation: scales of a group longer than the row expand
to exactly one value per element (the same array as before, for any group size)."""

import time

import numpy as np

from wcodec import quant as Q


def test_group_longer_than_row_expands_without_a_bomb():
    rows, cols = 4096, 3
    s = np.arange(1, rows + 1, dtype=np.float32)
    t = time.perf_counter()
    big = Q.ScaleLayout(Q.SCALE_GROUP, Q.MAX_GROUP_SIZE).expand(s, rows, cols)
    assert time.perf_counter() - t < 1.0
    small = Q.ScaleLayout(Q.SCALE_GROUP, cols).expand(s, rows, cols)
    assert big.shape == (rows, cols) and np.array_equal(big, small)
    assert np.array_equal(big[:, 0], s.astype(np.float64))


def test_groups_inside_a_row():
    s = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32).reshape(-1)
    e = Q.ScaleLayout(Q.SCALE_GROUP, 2).expand(s, 2, 5)
    assert e.tolist() == [[1, 1, 2, 2, 3], [4, 4, 5, 5, 6]]
