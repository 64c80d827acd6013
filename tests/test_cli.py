"""The CLI as a user runs it, through real subprocesses: encode, decode (with a tensor filter),
inspect (table and --json) and verify, over a safetensors file, a sharded model folder and a torch
state dict; and the issue-2 promise that any single flipped byte fails verification with a typed
error that names the damaged block."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file as st_load
from safetensors.torch import save_file as st_save

from conftest import run_cli, torch_bits
from wcodec.errors import FormatError
from wcodec.reader import Reader


def _model() -> dict:
    g = torch.Generator().manual_seed(7)
    return {
        "emb.weight": torch.randn(96, 48, generator=g),
        "ln.weight": torch.ones(48, dtype=torch.float16),
        "head.weight": torch.randn(16, 48, generator=g).to(torch.bfloat16),
        "steps": torch.tensor(1234, dtype=torch.int64),
        "mask": torch.rand(33, generator=g) > 0.5,
        "empty": torch.zeros(0, 5),
    }


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch_bits(a[k]) == torch_bits(b[k]), k


def test_safetensors_roundtrip_is_byte_identical(tmp_path):
    src = tmp_path / "m.safetensors"
    st_save(_model(), str(src), metadata={"format": "pt", "note": "kept as is"})
    enc, out = tmp_path / "m.wcodec", tmp_path / "out.safetensors"
    r = run_cli("encode", src, "-o", enc, "-q")
    assert r.returncode == 0, r.stderr
    r = run_cli("verify", enc)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    r = run_cli("decode", enc, "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    # tensors, metadata and even the header layout come back: the very same file
    assert out.read_bytes() == src.read_bytes()


def test_decode_tensor_filter_and_refusal_to_overwrite(tmp_path):
    src = tmp_path / "m.safetensors"
    st_save(_model(), str(src))
    enc, out = tmp_path / "m.wcodec", tmp_path / "part.safetensors"
    assert run_cli("encode", src, "-o", enc, "-q").returncode == 0
    r = run_cli("decode", enc, "-o", out, "-t", "*.weight", "-q")
    assert r.returncode == 0, r.stderr
    got = st_load(str(out))
    assert sorted(got) == ["emb.weight", "head.weight", "ln.weight"]
    _same({k: _model()[k] for k in got}, got)
    before = out.read_bytes()
    r = run_cli("decode", enc, "-o", out, "-q")
    assert r.returncode == 2 and "exists" in r.stderr.lower(), (r.returncode, r.stderr)
    assert out.read_bytes() == before


def test_inspect_table_and_json(tmp_path):
    src = tmp_path / "m.safetensors"
    st_save(_model(), str(src), metadata={"k": "v"})
    enc = tmp_path / "m.wcodec"
    assert run_cli("encode", src, "-o", enc, "-q").returncode == 0
    r = run_cli("inspect", enc)
    assert r.returncode == 0, r.stderr
    for name in _model():
        assert name in r.stdout
    r = run_cli("inspect", enc, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["metadata"]["k"] == "v"
    by_name = {t["name"]: t for t in doc["tensors"]}
    assert by_name["head.weight"]["dtype"] == "bfloat16"
    assert by_name["steps"]["shape"] == [] and by_name["empty"]["shape"] == [0, 5]
    assert doc["file_bytes"] == enc.stat().st_size


def test_sharded_folder_mirrors_input(tmp_path):
    model = _model()
    src = tmp_path / "model"
    src.mkdir()
    shards = {"model-00001-of-00002.safetensors": ["emb.weight", "ln.weight", "steps"],
              "model-00002-of-00002.safetensors": ["head.weight", "mask", "empty"]}
    weight_map = {}
    for fname, names in shards.items():
        st_save({n: model[n] for n in names}, str(src / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in names})
    index = {"metadata": {"total_size": 1}, "weight_map": weight_map}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    (src / "config.json").write_text('{"hidden": 48}')
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    r = run_cli("encode", src, "-o", enc, "-q")
    assert r.returncode == 0, r.stderr
    for f in sorted(enc.glob("*.wcodec")):
        r = run_cli("verify", f)
        assert r.returncode == 0, r.stdout + r.stderr
    assert len(list(enc.glob("*.wcodec"))) == 2
    r = run_cli("decode", enc, "-o", dec, "-q")
    assert r.returncode == 0, r.stderr
    for fname in shards:
        assert (dec / fname).read_bytes() == (src / fname).read_bytes(), fname
    for other in ("model.safetensors.index.json", "config.json"):
        assert (dec / other).read_bytes() == (src / other).read_bytes()


def test_torch_state_dict_input(tmp_path):
    model = _model()
    src = tmp_path / "m.pt"
    torch.save(model, str(src))
    enc, out = tmp_path / "m.wcodec", tmp_path / "m.safetensors"
    assert run_cli("encode", src, "-o", enc, "-q").returncode == 0
    r = run_cli("decode", enc, "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    _same(model, st_load(str(out)))


def test_bad_input_gets_a_typed_error_not_a_traceback(tmp_path):
    src = tmp_path / "not.safetensors"
    src.write_bytes(b"\x00" * 100)
    r = run_cli("encode", src, "-o", tmp_path / "x.wcodec", "-q")
    assert r.returncode == 4, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip()
    assert not (tmp_path / "x.wcodec").exists()
    r = run_cli("verify", tmp_path / "missing.wcodec")
    assert r.returncode == 3 and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> bytes:
    """A small multi-tensor file: every byte position gets flipped below."""
    d = tmp_path_factory.mktemp("flip")
    g = torch.Generator().manual_seed(3)
    src = d / "s.safetensors"
    st_save({"w": torch.randn(24, 16, generator=g), "b": torch.randn(16, generator=g).half(),
             "n": torch.arange(7, dtype=torch.int32)}, str(src), metadata={"k": "v"})
    enc = d / "s.wcodec"
    assert run_cli("encode", src, "-o", enc, "-q").returncode == 0
    return enc.read_bytes()


def _problems(path) -> list:
    try:
        with Reader(path) as r:
            return r.verify()
    except FormatError as e:
        return [dict(block=e.block, error=e.error_class, message=str(e))]


def test_every_flipped_byte_fails_verify(small_file, tmp_path):
    """Every byte of the file is covered by a CRC32C (header, each block, footer) or must be zero
    padding; so flipping any one bit anywhere must be reported, as a typed error."""
    assert _problems(_write(tmp_path / "ok.wcodec", small_file)) == []
    rng = np.random.default_rng(0)
    path = tmp_path / "bad.wcodec"
    for pos in range(len(small_file)):
        data = bytearray(small_file)
        data[pos] ^= 1 << int(rng.integers(8))
        probs = _problems(_write(path, data))
        assert probs, f"flip at byte {pos} went unnoticed"


def test_flipped_payload_byte_names_its_block_in_the_cli(small_file, tmp_path):
    with Reader(_write(tmp_path / "ok.wcodec", small_file)) as r:
        blocks = [(b, r.blocks[b]) for b in range(len(r.blocks))]
    from wcodec import layout as L
    for b, entry in blocks[:2]:
        data = bytearray(small_file)
        data[entry.offset + L.BlockHeader.sizeof() + 1] ^= 0x10
        path = _write(tmp_path / f"b{b}.wcodec", data)
        r = run_cli("verify", path)
        assert r.returncode == 14, (r.returncode, r.stdout, r.stderr)
        assert f"block {b}" in r.stdout + r.stderr
        r = run_cli("verify", path, "--json")
        doc = json.loads(r.stdout)
        assert not doc["ok"] and any(p["block"] == b for p in doc["problems"])


def _write(path, data) -> os.PathLike:
    with open(path, "wb") as f:
        f.write(bytes(data))
    return path


def test_verify_and_inspect_take_a_folder(tmp_path):
    """verify/inspect on a folder: every .wcodec file, the exit code of the first damaged one."""
    import wcodec
    folder = tmp_path / "shards"
    folder.mkdir()
    for i in range(3):
        wcodec.save_file({f"w{i}": torch.randn(64, 32)}, folder / f"part-{i}.wcodec")
    (folder / "config.json").write_text("{}")
    res = run_cli("verify", folder)
    assert res.returncode == 0 and res.stdout.count("OK   ") == 3, res.stdout + res.stderr
    res = run_cli("inspect", folder, "--json")
    assert res.returncode == 0
    assert [len(r["tensors"]) for r in json.loads(res.stdout)] == [1, 1, 1]
    bad = folder / "part-1.wcodec"
    data = bytearray(bad.read_bytes())
    data[200] ^= 0xFF  # inside the first block's payload
    bad.write_bytes(bytes(data))
    res = run_cli("verify", folder)
    assert res.returncode == 14, res.stdout + res.stderr
    assert "part-1.wcodec" in res.stdout and res.stdout.count("OK   ") == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_cli("verify", empty)
    assert res.returncode == 4 and "no .wcodec files" in res.stdout + res.stderr
