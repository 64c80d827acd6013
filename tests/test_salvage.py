"""Salvage (issue 8, spec §13): `wcodec verify` lists every damaged block and tensor and exits with
the first problem's class code; `wcodec decode --salvage` writes every intact tensor, bit for bit,
and reports the lost ones, also when the footer or the index is damaged."""

from __future__ import annotations

import json
import os
import random
import struct
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
import _wcd_hostile as H  # noqa: E402

from wcodec import dtypes as D  # noqa: E402
from wcodec.cli import app  # noqa: E402
from wcodec.errors import FORMAT_ERROR_CLASSES  # noqa: E402
from wcodec.reader import Reader  # noqa: E402
from wcodec.salvage import SalvageReader, examine, salvage_file, walk_blocks  # noqa: E402
from wcodec.writer import EncodeOptions, Writer  # noqa: E402

RUN = CliRunner()
NAMES = ["w0", "w1", "w2", "w3", "i8"]


def _write(path, *, sha256=True, alignment_log2=6):
    rng = np.random.default_rng(3)
    with Writer(path, metadata={"note": "x"},
                options=EncodeOptions(threads=1, chunk_elements=200, sha256=sha256,
                                      alignment_log2=alignment_log2)) as w:
        for i in range(4):
            x = rng.standard_normal(500).astype(np.float32)
            w.add(f"w{i}", D.by_name("float32"), (20, 25), x)
        w.add("i8", D.by_name("int8"), (7,), np.arange(7, dtype=np.int8))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("salvage")
    path = root / "good.wcd"
    _write(path)
    with Reader(path) as r:
        truth = {n: r.read_bytes(n).tobytes() for n in r.keys()}
    return dict(root=root, data=path.read_bytes(), truth=truth)


def block_offsets(data: bytes) -> list[tuple[int, int]]:
    """(offset, tensor_id) of every CHUNK block, from the file's own block headers."""
    a = 1 << data[20]
    out, pos = [], H.align_up(32, a)
    while True:
        bt, _, tid, _, _, plen = H.BH.unpack_from(data, pos)
        if bt != H.CHUNK:
            return out
        out.append((pos, tid))
        pos = H.align_up(pos + 28 + plen, a)


def damage_blocks(data: bytes, tensors: list[int]) -> bytes:
    """Flip one payload byte of the first CHUNK block of each tensor id in `tensors`."""
    d = bytearray(data)
    seen = set()
    for off, tid in block_offsets(data):
        if tid in tensors and tid not in seen:
            d[off + 24 + 3] ^= 0x40
            seen.add(tid)
    return bytes(d)


def put(root, name, data: bytes):
    p = root / name
    p.write_bytes(data)
    return p


def cli(*args):
    return RUN.invoke(app, [str(a) for a in args])


def st_load(path) -> dict:
    """A safetensors file read by hand (numpy has no bfloat16; here only raw bytes matter)."""
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    return {k: raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]
            for k, v in header.items()}


def check_salvage(base, path, lost: set[str], index: str):
    out = path.with_suffix(".safetensors")
    res = cli("decode", "--salvage", "--json", "-q", path, "-o", out)
    rep = json.loads(res.stdout)
    assert {p["tensor"] for p in rep["lost"]} == lost, rep
    assert set(rep["recovered"]) == set(NAMES) - lost
    assert rep["index"] == index
    got = st_load(out)
    assert set(got) == set(NAMES) - lost
    for n, b in got.items():
        assert b == base["truth"][n], n  # bit for bit
    if rep["problems"]:
        assert res.exit_code == FORMAT_ERROR_CLASSES[rep["problems"][0]["error"]].exit_code
    else:
        assert res.exit_code == 0
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    return rep


def test_intact_file(base):
    p = put(base["root"], "intact.wcd", base["data"])
    res = cli("verify", "--json", p)
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"]
    rep = check_salvage(base, p, set(), "intact")
    assert rep["intact"]


def test_verify_lists_every_damaged_block_and_tensor(base):
    d = damage_blocks(base["data"], [0, 2, 3])
    p = put(base["root"], "three.wcd", d)
    res = cli("verify", "--json", p)
    rep = json.loads(res.stdout)
    assert res.exit_code == 14  # ChecksumMismatch, the first problem's class
    assert [p["error"] for p in rep["problems"]] == ["ChecksumMismatch"] * 3
    assert {p["tensor"] for p in rep["problems"]} == {"w0", "w2", "w3"}
    assert len({p["block"] for p in rep["problems"]}) == 3
    text = cli("verify", p)
    assert text.exit_code == 14 and text.stdout.count("BAD  ChecksumMismatch") == 3
    check_salvage(base, p, {"w0", "w2", "w3"}, "intact")


def test_exit_code_is_the_first_problems_class(base):
    """A footer with a non-zero reserved field (MalformedRecord, 16) before a damaged block
    (ChecksumMismatch, 14): verify exits 16, and still lists the block."""
    d = bytearray(damage_blocks(base["data"], [1]))
    d[-8] = 1  # footer reserved
    d[-4:] = struct.pack("<I", H.crc(d[-32:-8]))
    p = put(base["root"], "first.wcd", bytes(d))
    res = cli("verify", "--json", p)
    rep = json.loads(res.stdout)
    assert [q["error"] for q in rep["problems"]] == ["MalformedRecord", "ChecksumMismatch"]
    assert rep["problems"][1]["tensor"] == "w1"
    assert res.exit_code == 16
    check_salvage(base, p, {"w1"}, "walked")


def test_damaged_footer_index_found_by_walking(base):
    d = bytearray(damage_blocks(base["data"], [2]))
    d[-32:] = os.urandom(32)
    p = put(base["root"], "footer.wcd", bytes(d))
    res = cli("verify", "--json", p)
    rep = json.loads(res.stdout)
    assert rep["index"] == "walked" and rep["problems"][0]["rule"] in ("FTR-01", "FTR-02")
    assert {q["tensor"] for q in rep["problems"][1:]} == {"w2"}
    assert res.exit_code == FORMAT_ERROR_CLASSES[rep["problems"][0]["error"]].exit_code
    check_salvage(base, p, {"w2"}, "walked")


def test_damaged_index_recovers_tensors_with_digests(base, tmp_path):
    """A flipped byte in the metadata value inside the INDEX payload: the INDEX CRC fails, the
    records still parse, and every tensor whose SHA-256 matches is recovered."""
    data = base["data"]
    io_, payload = H.index_payload(data)
    at = payload.index(b"note") + 9 + io_ + 24  # the metadata value "x"
    d = bytearray(data)
    d[at] ^= 0x01
    p = put(base["root"], "index.wcd", bytes(d))
    res = cli("verify", p)
    assert res.exit_code == 14 and "IDX-02" in res.stdout
    check_salvage(base, p, set(), "damaged")
    # the same damage in a file without digests: nothing can be confirmed, all reported lost
    q = tmp_path / "nosha.wcd"
    _write(q, sha256=False)
    raw = bytearray(q.read_bytes())
    io_, payload = H.index_payload(bytes(raw))
    raw[payload.index(b"note") + 9 + io_ + 24] ^= 0x01
    q.write_bytes(bytes(raw))
    with SalvageReader(q) as r:
        rep = examine(r)
    assert rep.recovered == [] and {x["tensor"] for x in rep.lost} == set(NAMES)


def test_one_bad_record_costs_only_its_tensor(base):
    """Tensor w1's record_kind set to an unknown kind (CRCs recomputed): a strict open fails with
    UnsupportedFeature; salvage recovers the four others."""
    data = base["data"]
    io_, payload = H.index_payload(data)
    f = next(f for f in H.index_fields(payload) if f.name == "tensor[1].record_kind")
    d = bytearray(data)
    d[io_ + 24 + f.offset] = 99
    p = put(base["root"], "kind.wcd", bytes(H.reseal(d, blocks=False)))
    res = cli("verify", p)
    assert res.exit_code == 12, res.stdout
    rep = check_salvage(base, p, {"w1"}, "walked")
    assert rep["lost"][0]["error"] == "UnsupportedFeature"


def test_truncated_file_nothing_written(base):
    io_, _ = H.index_payload(base["data"])
    p = put(base["root"], "cut.wcd", base["data"][:io_ + 40])
    res = cli("verify", p)
    assert res.exit_code == 13
    out = base["root"] / "cut.safetensors"
    res = cli("decode", "--salvage", p, "-o", out)
    assert res.exit_code == 13 and not out.exists()
    with SalvageReader(p) as r:
        assert r.index_state == "missing"
        assert len([f for f in r.found if f.ok]) == len(block_offsets(base["data"]))


def test_damaged_header_walk_without_alignment(base):
    """The header's CRC fails (alignment untrusted): the walk searches every offset."""
    d = bytearray(damage_blocks(base["data"], [3]))
    d[12] ^= 0x01  # required_features, header CRC now wrong
    p = put(base["root"], "header.wcd", bytes(d))
    res = cli("verify", "--json", p)
    rep = json.loads(res.stdout)
    assert rep["problems"][0]["rule"] == "HDR-03" and res.exit_code == 14
    check_salvage(base, p, {"w3"}, "walked")


def test_walk_resyncs_after_a_damaged_block_header(base):
    """A block whose payload_length is destroyed: the walk cannot jump over it, searches for the
    next block header, and finds every other block."""
    data = base["data"]
    offs = block_offsets(data)
    d = bytearray(data)
    off, tid = offs[2]
    d[off + 16:off + 24] = struct.pack("<Q", 3)
    found = walk_blocks(bytes(d), len(d), 64)
    ok = [f.offset for f in found if f.ok]
    assert set(ok) == {o for o, _ in offs} - {off} | {H.index_payload(data)[0]}


def test_random_damage_agrees_with_strict_reads(base, tmp_path):
    """Random single-byte damage anywhere: salvage's recovered set is exactly the tensors a strict
    reader decodes (when it opens), and every recovered tensor is bit-exact."""
    rng = random.Random(11)
    data = base["data"]
    for i in range(60):
        d = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
        p = put(tmp_path, f"r{i}.wcd", bytes(d))
        out = tmp_path / f"r{i}.safetensors"
        rep = salvage_file(p, out)
        try:
            with Reader(p) as r:
                strict_ok = set()
                for n in r.keys():
                    try:
                        r.read_bytes(n)
                        strict_ok.add(n)
                    except Exception as e:  # noqa: BLE001 (only FormatError expected)
                        assert type(e).__name__ in FORMAT_ERROR_CLASSES, e
            assert set(rep.recovered) == strict_ok, (i, rep)
        except Exception as e:  # noqa: BLE001
            assert type(e).__name__ in FORMAT_ERROR_CLASSES or isinstance(e, AssertionError), e
            if isinstance(e, AssertionError):
                raise
        if rep.index != "missing":
            got = st_load(out)
            assert set(got) == set(rep.recovered)
            for n, b in got.items():
                assert b == base["truth"][n]
