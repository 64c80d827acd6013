"""tools/bench_lossless.py --quick runs end to end on tiny synthetic weights and checks round trips."""

import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from tools import bench_lossless  # noqa: E402


def test_quick_smoke(tmp_path):
    rc = bench_lossless.main(["--quick", "--only", "bfloat16", "--no-plot", "--out", str(tmp_path)])
    assert rc == 0
    md = (tmp_path / "lossless.md").read_text()
    assert "synthetic bfloat16" in md and "Round trips bit for bit: all" in md


def test_bounds_of_a_constant_and_a_uniform_tensor():
    import torch
    m = bench_lossless.Model("t", {"z": torch.zeros(1000), "u": torch.arange(256, dtype=torch.uint8)
                                   .view(torch.float8_e4m3fn)}, "mixed")
    b = bench_lossless.bounds(m)
    # zeros: every plane constant (0 bits); 256 distinct bytes once each: exactly 8 bits apiece
    assert abs(b["bound/tensor"] - 256) < 1e-9 and abs(b["bound/chunk"] - 256) < 1e-9
