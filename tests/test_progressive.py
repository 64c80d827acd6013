"""Progressive loading (wcodec.progressive): band 1 first, then refined in place, and the blocks of
band 1 are never read again (counted at the reader's one block-access point, block_payload)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from wcodec.api import safe_open, save_file  # noqa: E402
from wcodec.errors import DigestMismatch, UsageError  # noqa: E402
from wcodec.progressive import load_progressive  # noqa: E402
from wcodec.reader import Reader  # noqa: E402
from wcodec.records.bands import Bands  # noqa: E402


@pytest.fixture()
def model_file(tmp_path):
    g = torch.Generator().manual_seed(3)
    t = {"fc.weight": torch.randn(32, 48, generator=g) * 0.05,
         "fc.bias": torch.randn(32, generator=g) * 0.01,
         "conv.weight": (torch.randn(8, 3, 3, 3, generator=g) * 0.1).to(torch.bfloat16),
         "steps": torch.arange(7)}
    p = str(tmp_path / "m.wcd")
    save_file(t, p, bands=4, band_options=dict(band1_bits=3.0, scales="channel"))
    return p, t


@pytest.fixture()
def block_log(monkeypatch):
    """Every block payload any Reader hands out, as (reader path, block index)."""
    log = []
    orig = Reader.block_payload

    def counted(self, b, expect):
        log.append(b)
        return orig(self, b, expect)
    monkeypatch.setattr(Reader, "block_payload", counted)
    return log


def band_blocks(path):
    """{tensor: [blocks of band 1 (with its scales), band 2, ...]}"""
    out = {}
    with Reader(path) as r:
        for name in r.keys():
            info = r.info(name)
            if info.kind_name == "bands":
                d = Bands.describe(info.record)
                out[name] = [{b for s in streams for b in info.streams[s].chunk_blocks}
                             for streams in d["band_streams"]]
    return out


def bits(t):
    return t.view({1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
                  [t.element_size()]).clone()


def test_load_band1_then_refine_in_place(model_file, block_log):
    path, orig = model_file
    bb = band_blocks(path)
    assert set(bb) == {"fc.weight", "fc.bias", "conv.weight"}
    with safe_open(path, "pt") as f:
        want = {k: {n: f.get_tensor(n, bands=k) for n in bb} for k in (1, 2, 3)}
    block_log.clear()
    sd, ref = load_progressive(path)
    with ref:
        band1 = set().union(*(v[0] for v in bb.values()))
        later = set().union(*(b for v in bb.values() for b in v[1:]))
        assert band1 <= set(block_log) and not (set(block_log) & later)
        assert torch.equal(sd["steps"], orig["steps"])
        ptrs = {n: sd[n].data_ptr() for n in bb}
        held = {n: sd[n] for n in bb}
        for n in bb:
            assert torch.equal(bits(sd[n]), bits(want[1][n])), n
        for k in (2, 3, 4):
            block_log.clear()
            ref.refine(k)
            read = set(block_log)
            assert read == set().union(*(v[k - 1] for v in bb.values())), k
            assert not read & band1
            for n in bb:
                assert sd[n].data_ptr() == ptrs[n] and sd[n] is held[n]
                exp = want[k][n] if k < 4 else orig[n]
                assert torch.equal(bits(sd[n]), bits(exp)), (n, k)
            assert ref.bands("fc.weight") == k
        block_log.clear()
        ref.refine()                     # nothing left to read
        assert block_log == []
        with pytest.raises(UsageError):
            ref.refine(2)


def test_a_model_sees_the_refinement(model_file):
    path, orig = model_file
    sd, ref = load_progressive(path)
    with ref:
        lin = torch.nn.Linear(48, 32)
        lin.load_state_dict({"weight": sd["fc.weight"], "bias": sd["fc.bias"]}, assign=True)
        x = torch.randn(4, 48, generator=torch.Generator().manual_seed(0))
        full = torch.nn.functional.linear(x, orig["fc.weight"], orig["fc.bias"])
        with torch.no_grad():
            errs = []
            for k in (1, 2, 3, 4):
                ref.refine(k)
                errs.append(float((lin(x) - full).abs().max()))
        assert errs[0] > errs[1] > errs[2] and errs[3] == 0.0


def test_prefix_digest_checked_on_refine(model_file, tmp_path):
    from conftest import WFile
    path, _ = model_file
    f = WFile.parse(open(path, "rb").read())
    rec = f.record("fc.weight")
    p = bytearray(rec["params"])
    assert p[3] & 2
    p[16 + 60 + 28] ^= 1                # band 2's prefix_sha256
    rec["params"] = bytes(p)
    bad = tmp_path / "bad.wcd"
    bad.write_bytes(f.build())
    sd, ref = load_progressive(str(bad))
    with ref:
        with pytest.raises(DigestMismatch) as e:
            ref.refine(2)
        assert e.value.rule == "BND-07"
    sd, ref = load_progressive(str(bad), verify_sha256=False)
    with ref:
        ref.refine()


def test_start_at_more_bands_and_plain_files(model_file, tmp_path):
    path, orig = model_file
    sd, ref = load_progressive(path, bands=4)
    with ref:
        for n, t in orig.items():
            assert torch.equal(bits(sd[n]), bits(t))
    plain = str(tmp_path / "plain.wcd")
    save_file(orig, plain)
    sd, ref = load_progressive(plain)
    with ref:
        assert ref.max_bands == 0
        ref.refine()
        assert all(torch.equal(bits(sd[n]), bits(t)) for n, t in orig.items())
    with pytest.raises(UsageError):
        load_progressive(path, bands=0)
