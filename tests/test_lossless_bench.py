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
    try:
        import zipnn  # noqa: F401  (the warm table compares against it; CI may not have it)
    except ImportError:
        return
    assert "Decode only, warm" in md


def test_profile_decode_smoke(tmp_path, capsys):
    import pytest
    import torch
    import wcodec
    from wcodec.codecs import rans
    if rans.native is None:
        pytest.skip("C kernels not built")
    from tools import profile_decode
    p = tmp_path / "m.wcd"
    wcodec.save_file({"a": torch.randn(70_000).to(torch.bfloat16), "b": torch.randn(3000)}, p,
                     chunk_elements=16384)
    assert profile_decode.main([str(p), "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "native chunk batch, 2 thread(s)" in out and "first touch" in out


def test_bounds_of_a_constant_and_a_uniform_tensor():
    import torch
    m = bench_lossless.Model("t", {"z": torch.zeros(1000), "u": torch.arange(256, dtype=torch.uint8)
                                   .view(torch.float8_e4m3fn)}, "mixed")
    b = bench_lossless.bounds(m)
    # zeros: every plane constant (0 bits); 256 distinct bytes once each: exactly 8 bits apiece
    assert abs(b["bound/tensor"] - 256) < 1e-9 and abs(b["bound/chunk"] - 256) < 1e-9
