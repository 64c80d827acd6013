"""Bomb defences (issue 8): small files that declare, or expand to, far more than they hold. Each is
opened, every tensor read, verify()ed and salvaged in a fresh subprocess whose peak resident memory
(VmHWM above its level after imports, native allocations included) is bounded here. The bombs:
the conformance vectors whose names contain LIM or bomb, and crafted ones from tests/_wcd_hostile.py
(fill-lane tensors over and at the configured limit, a zstd frame declaring a 128 MiB window and no
content size, a window beyond libzstd's limit, a block table of 2^20 entries in a file holding no
block, an index of many tiny records)."""

from __future__ import annotations

import glob
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _wcd_hostile as H  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20
LIMIT = {"max_tensor_bytes": 16 * MiB}

pytestmark = pytest.mark.skipif(not H.rss_tracking_available(),
                                reason="needs /proc/self/clear_refs (Linux)")


def vectors():
    return sorted(p for p in glob.glob(os.path.join(ROOT, "conformance", "vectors", "*.wcd"))
                  if "LIM" in os.path.basename(p) or "bomb" in os.path.basename(p))


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    d = tmp_path_factory.mktemp("bombs")
    cases = {  # name: (path, limits, expected outcome, expected error, peak bound in bytes)
        "fill_over_limit": (H.fill_bomb(d / "f1.wcd", 1 << 26), LIMIT, "rejected",
                            "LimitExceeded", 8 * MiB),
        # 16 MiB of zeros from ~1 KB: allowed by the limit, so it decodes; memory is the output,
        # the chunk's lane buffer and a transform temporary (see docs/security.md)
        "fill_at_limit": (H.fill_bomb(d / "f2.wcd", 1 << 21), LIMIT, "ok", None, 4 * 16 * MiB),
        "zstd_window_2^27": (H.zstd_window_bomb(d / "z27.wcd", 27), LIMIT, "ok", None,
                             160 * MiB),
        "zstd_window_2^31": (H.zstd_window_bomb(d / "z31.wcd", 31), LIMIT, "partial",
                             "CorruptPayload", 16 * MiB),
        "block_table_2^20": (H.block_count_bomb(d / "b.wcd", 1 << 20), LIMIT, "rejected",
                             "LayoutError", 4 * 25 * MiB),
        "records_5000": (H.many_records(d / "r.wcd", 5000), LIMIT, "ok", None, 5000 * 8192),
    }
    for p in vectors():
        cases[os.path.basename(p)] = (p, {}, None, None, 32 * MiB)
    with ThreadPoolExecutor(2) as pool:
        futs = {k: pool.submit(H.measure_peak, v[0], v[1]) for k, v in cases.items()}
        return {k: (cases[k], f.result()) for k, f in futs.items()}


def test_conformance_bomb_vectors_exist():
    names = [os.path.basename(p) for p in vectors()]
    assert any("bomb" in n for n in names) and any("LIM" in n for n in names), names


def test_bombs_stay_within_memory_bounds(measured):
    lines = []
    for name, ((path, limits, outcome, error, bound), got) in sorted(measured.items()):
        lines.append(f"{name:48s} {got['outcome']:9s} {got['error'] or '':16s} "
                     f"peak {got['peak_kb'] / 1024:8.1f} MiB  cpu {got['cpu_s']:.2f} s")
        if outcome is not None:
            assert (got["outcome"], got["error"]) == (outcome, error), (name, got)
        assert got["peak_kb"] * 1024 <= bound, (name, got, bound)
    print("\n" + "\n".join(lines))


def test_limits_are_configurable_in_the_api(tmp_path):
    """load_file / safe_open / Reader take limits= as a Limits or a dict of its fields."""
    import wcodec
    from wcodec.errors import LimitExceeded
    from wcodec.reader import Reader
    p = H.fill_bomb(tmp_path / "f.wcd", 1 << 16)  # 512 KiB of float64 zeros
    with Reader(p, limits={"max_tensor_bytes": 1 << 20}) as r:
        assert r.read_bytes("zeros").size == 8 << 16
    for call in (lambda: Reader(p, limits={"max_tensor_bytes": 1 << 18}),
                 lambda: wcodec.safe_open(p, framework="np",
                                          limits=wcodec.Limits(max_tensor_bytes=1 << 18)),
                 lambda: wcodec.load_file(p, limits={"max_tensor_bytes": 1 << 18})):
        with pytest.raises(LimitExceeded):
            call()
    with pytest.raises(ValueError):
        Reader(p, limits={"max_bogus": 1})


def test_limits_are_configurable_in_the_cli(tmp_path):
    from typer.testing import CliRunner
    from wcodec.cli import app
    p = H.fill_bomb(tmp_path / "f.wcd", 1 << 16)
    run = CliRunner()
    assert run.invoke(app, ["verify", p]).exit_code == 0
    assert run.invoke(app, ["verify", "--max-tensor-bytes", str(1 << 18), p]).exit_code == 17
    assert run.invoke(app, ["verify", "--limit", "tensors=0", p]).exit_code == 17
    assert run.invoke(app, ["verify", "--limit", "nonsense=1", p]).exit_code == 2
    out = tmp_path / "o.safetensors"
    res = run.invoke(app, ["decode", "-q", "--limit", "max-blocks=0", p, "-o", str(out)])
    assert res.exit_code == 17 and not out.exists()
    res = run.invoke(app, ["decode", "-q", "--max-index-bytes", "16", p, "-o", str(out)])
    assert res.exit_code == 17 and not out.exists()
