"""Band-record conformance beyond the decoder contract (conformance/README.md decodes whole files):
every valid band vector's manifest entry lists the SHA-256 of every prefix k = 1..N
(`prefix_sha256`), and both the reference decoder (bands=k) and conformance/edu_decoder.py
(`--bands K`) must reproduce each of them; a changed prefix digest is rejected by both (BND-07)."""

import hashlib
import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest

from wcodec.errors import DigestMismatch
from wcodec.reader import Reader

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conformance"


def band_vectors():
    m = json.loads((CONF / "manifest.json").read_text(encoding="utf-8"))
    out = [v for v in m["vectors"] if v["expected"] == "valid"
           and any("prefix_sha256" in t for t in v.get("tensors", []))]
    return out


@pytest.fixture(scope="module")
def edu():
    spec = importlib.util.spec_from_file_location("edu_decoder_bands", CONF / "edu_decoder.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod            # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def read_safetensors(path: Path) -> dict:
    data = path.read_bytes()
    n = struct.unpack_from("<Q", data, 0)[0]
    head = json.loads(data[8:8 + n])
    base = 8 + n
    return {k: data[base + v["data_offsets"][0]:base + v["data_offsets"][1]]
            for k, v in head.items() if k != "__metadata__"}


def test_there_are_band_vectors():
    vs = band_vectors()
    assert len(vs) >= 10
    counts = {len(t["prefix_sha256"]) for v in vs for t in v["tensors"] if "prefix_sha256" in t}
    assert {2, 3, 8} <= counts
    for v in vs:
        for t in v["tensors"]:
            if "prefix_sha256" in t:
                assert t["prefix_sha256"][-1] == t["sha256"]


@pytest.mark.parametrize("entry", band_vectors(), ids=lambda v: v["id"])
def test_reference_decodes_every_prefix(entry):
    with Reader(CONF / "vectors" / entry["file"]) as r:
        for t in entry["tensors"]:
            for k, want in enumerate(t.get("prefix_sha256", []), start=1):
                got = hashlib.sha256(r.read_bytes(t["name"], bands=k)).hexdigest()
                assert got == want, (t["name"], k)


@pytest.mark.parametrize("entry", band_vectors(), ids=lambda v: v["id"])
def test_edu_decodes_every_prefix(entry, edu, tmp_path):
    kmax = max(len(t.get("prefix_sha256", [])) for t in entry["tensors"])
    for k in range(1, kmax + 1):
        out = tmp_path / f"k{k}.safetensors"
        try:
            rc = edu.main(["edu", str(CONF / "vectors" / entry["file"]), str(out),
                           "--bands", str(k)])
        finally:
            edu.BND_PREFIX = None
        assert rc == 0
        got = read_safetensors(out)
        for t in entry["tensors"]:
            ps = t.get("prefix_sha256")
            want = ps[min(k, len(ps)) - 1] if ps else t["sha256"]
            assert hashlib.sha256(got[t["name"]]).hexdigest() == want, (t["name"], k)


def test_prefix_digest_mismatch_both_decoders(edu, tmp_path, capsys):
    """BND-07: flip one bit of band 1's prefix_sha256 in a valid vector (the file re-sealed by the
    test kit); a prefix-1 decode fails in both decoders, a full decode still passes."""
    from conftest import WFile
    src = CONF / "vectors" / "v_bands_float32_3_lossless_dependent_channel.wcd"
    f = WFile.parse(src.read_bytes())
    rec = f.record("w")
    p = bytearray(rec["params"])
    assert p[3] & 2                         # has_prefix_digests
    p[16 + 28] ^= 1                         # band 1's prefix_sha256, first byte
    rec["params"] = bytes(p)
    bad = tmp_path / "bad.wcd"
    bad.write_bytes(f.build())
    with Reader(bad) as r:
        with pytest.raises(DigestMismatch) as e:
            r.read_bytes("w", bands=1)
        assert e.value.rule == "BND-07"
        r.read_bytes("w")
    out = tmp_path / "o.safetensors"
    try:
        assert edu.main(["edu", str(bad), str(out), "--bands", "1"]) == 1
    finally:
        edu.BND_PREFIX = None
    assert "DigestMismatch" in capsys.readouterr().err
    assert edu.main(["edu", str(bad), str(out)]) == 0
