"""`wcodec encode --predict-layers` (codec/wcodec/layer_predict.py): layer-to-layer prediction
inside one file decodes bit for bit in the original tensor order, finds the FFN permutation when
layers are permuted copies, never makes a file larger than intra coding, and keeps reference
chains within PRD-09."""

from __future__ import annotations

import os

import numpy as np
import pytest
import safetensors.torch
import torch
from typer.testing import CliRunner

from wcodec import dtypes as D
from wcodec import formats
from wcodec.cli import app
from wcodec.layer_predict import encode_file_layers, hidden_groups, plan_references
from wcodec.reader import Reader
from wcodec.writer import EncodeOptions

F32 = D.BY_NAME["float32"]


def model(tmp_path, layers=6, related=True, seed=0):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((64, 16)).astype(np.float32)
    w2 = rng.standard_normal((16, 64)).astype(np.float32)
    st = {}
    for l in range(layers):
        p = rng.permutation(64)
        if not related:
            w1 = rng.standard_normal((64, 16)).astype(np.float32)
            w2 = rng.standard_normal((16, 64)).astype(np.float32)
        st[f"enc.layer.{l}.ffn.in.weight"] = torch.tensor(
            w1[p] * np.float32(1 + 1e-6 * rng.standard_normal()))
        st[f"enc.layer.{l}.ffn.in.bias"] = torch.tensor(rng.standard_normal(64).astype(np.float32))
        st[f"enc.layer.{l}.ffn.out.weight"] = torch.tensor(np.ascontiguousarray(w2[:, p]))
        st[f"enc.layer.{l}.attn.weight"] = torch.tensor(
            rng.standard_normal((16, 16)).astype(np.float32))
    st["head.weight"] = torch.tensor(rng.standard_normal((3, 16)).astype(np.float32))
    src = tmp_path / "m.safetensors"
    safetensors.torch.save_file(st, src)
    return src, st


def roundtrip(tmp_path, src, st):
    out = tmp_path / "o.safetensors"
    formats.decode_file(tmp_path / "m.wcodec", out)
    got = safetensors.torch.load_file(out)
    assert list(got) == list(safetensors.torch.load_file(src))   # original order
    assert all(got[k].numpy().tobytes() == st[k].numpy().tobytes() for k in st)


def test_aligned_layers_are_predicted(tmp_path):
    pytest.importorskip("scipy")
    src, st = model(tmp_path)
    r = encode_file_layers(src, tmp_path / "m.wcodec", EncodeOptions())
    formats.encode_file(src, tmp_path / "p.wcodec", EncodeOptions())
    assert r["predicted"] >= 5 and r["permuted"] >= 5, r
    assert os.path.getsize(tmp_path / "m.wcodec") < 0.8 * os.path.getsize(tmp_path / "p.wcodec")
    roundtrip(tmp_path, src, st)
    with Reader(tmp_path / "m.wcodec") as rd:
        assert rd.info("enc.layer.3.ffn.out.weight").record_kind == 4


def test_never_larger_than_intra(tmp_path):
    src, st = model(tmp_path, related=False, seed=1)
    r = encode_file_layers(src, tmp_path / "m.wcodec", EncodeOptions())
    formats.encode_file(src, tmp_path / "p.wcodec", EncodeOptions())
    assert r["chosen_bytes"] <= r["intra_bytes"]
    assert os.path.getsize(tmp_path / "m.wcodec") <= os.path.getsize(tmp_path / "p.wcodec")
    roundtrip(tmp_path, src, st)


def test_chain_depth_stays_within_prd09(tmp_path):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((32, 32)).astype(np.float32)
    st = {f"blocks.{i}.w": torch.tensor(w + np.float32(1e-6) * i) for i in range(20)}
    src = tmp_path / "m.safetensors"
    safetensors.torch.save_file(st, src)
    r = encode_file_layers(src, tmp_path / "m.wcodec", EncodeOptions())
    assert r["predicted"] >= 17      # 20 layers: a new chain starts after 16 predicted records
    roundtrip(tmp_path, src, st)


def test_groups_and_references():
    e = {f"encoder.layer.{l}.{n}": (F32, s) for l in range(3) for n, s in (
        ("intermediate.dense.weight", (1536, 384)), ("intermediate.dense.bias", (1536,)),
        ("output.dense.weight", (384, 1536)), ("attention.self.query.weight", (384, 384)),
        ("attention.output.dense.weight", (384, 384)))}
    e["embeddings.word_embeddings.weight"] = (F32, (100, 384))
    refs = plan_references(e)
    assert refs["encoder.layer.2.output.dense.weight"] == "encoder.layer.1.output.dense.weight"
    assert "encoder.layer.0.output.dense.weight" not in refs
    g = hidden_groups(e)[("encoder.layer.", 1)]
    assert g == [(1536, ["encoder.layer.1.intermediate.dense.weight",
                         "encoder.layer.1.intermediate.dense.bias"],
                  ["encoder.layer.1.output.dense.weight"])]


def test_cli(tmp_path):
    pytest.importorskip("scipy")
    src, st = model(tmp_path)
    res = CliRunner().invoke(app, ["encode", str(src), "-o", str(tmp_path / "m.wcodec"),
                                   "--predict-layers"])
    assert res.exit_code == 0, res.output
    roundtrip(tmp_path, src, st)
    res = CliRunner().invoke(app, ["encode", str(src), "-o", str(tmp_path / "x.wcodec"),
                                   "--predict-layers", "--bits-per-weight", "4"])
    assert res.exit_code == 2
