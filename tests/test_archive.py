"""Checkpoint archives (`wcodec archive ...`, spec/records/predicted.md §9): a synthetic training
series round-trips bit for bit through add/list/extract, keyframes come every K, a missing or
changed parent is exit 20 with a clear message, lossy residuals do not drift, and `inspect`
shows the reference chain."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from wcodec import errors as E
from wcodec.archive import Archive
from wcodec.cli import app

LR, WD = 3e-5, 0.01


def series(folder, n=5, seed=0):
    """n checkpoints of a small model trained by an AdamW-like rule: decay every weight by
    (1 − lr·wd) per step in float32, and move a random subset by ±lr per step."""
    rng = np.random.default_rng(seed)
    state = {"emb": (rng.standard_normal((300, 32)) * 0.05).astype(np.float32),
             "ffn.w": (rng.standard_normal((64, 32)) * 0.05).astype(np.float32),
             "ffn.b": np.zeros(64, np.float32),
             "norm.w": np.ones(32, np.float16),
             "pos_ids": np.arange(40, dtype=np.int64)}
    decay = np.float32(1 - LR * WD)
    paths = []
    for k in range(n):
        if k:
            for _ in range(20):  # 20 steps between checkpoints
                for name in ("emb", "ffn.w", "ffn.b"):
                    w = state[name] * decay
                    touched = rng.random(w.shape) < (0.1 if name == "emb" else 1.0)
                    step = (np.sign(rng.standard_normal(w.shape)) * LR).astype(np.float32)
                    state[name] = np.where(touched, w + step, w).astype(np.float32)
            state["norm.w"] = (state["norm.w"] + np.float16(1e-3)).astype(np.float16)
        p = os.path.join(folder, f"step-{20 * k:06d}.safetensors")
        save_file({n: v.copy() for n, v in state.items()}, p)
        paths.append(p)
    return paths


def cli(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("arch")
    paths = series(d)
    arch = d / "arch"
    for p in paths:
        code, out = cli("archive", "add", arch, p, "--keyframe-every", 3, "-q")
        assert code == 0, out
    return d, arch, paths


def test_roundtrip_and_keyframes(built, tmp_path):
    d, arch, paths = built
    a = Archive(arch)
    assert [e["keyframe"] for e in a.checkpoints] == [True, False, False, True, False]
    assert all(e["predicted_tensors"] >= 2 for e in a.checkpoints if not e["keyframe"])
    for p in paths:
        name = os.path.basename(p)[:-len(".safetensors")]
        out = tmp_path / f"{name}.safetensors"
        code, msg = cli("archive", "extract", arch, name, "-o", out)
        assert code == 0, msg
        want, got = load_file(p), load_file(out)
        assert list(got) == list(want) or set(got) == set(want)
        for n in want:
            assert got[n].dtype == want[n].dtype and got[n].shape == want[n].shape
            assert got[n].tobytes() == want[n].tobytes(), n
    code, out = cli("archive", "list", arch)
    assert code == 0 and "keyframe" in out and "<- step-000020" in out
    code, out = cli("archive", "list", arch, "--json")
    assert json.loads(out)["checkpoints"][2]["parent_name"] == "step-000020"


def test_predicted_checkpoints_are_smaller(built):
    _, arch, _ = built
    a = Archive(arch)
    for e in a.checkpoints:
        if not e["keyframe"]:
            # never larger than intra (plus params), and here clearly smaller
            assert e["bytes"] < 0.8 * a.checkpoints[0]["bytes"], e


def test_inspect_shows_chain(built):
    _, arch, _ = built
    code, out = cli("inspect", arch / "step-000040.wcodec", "--json")
    assert code == 0, out
    rep = json.loads(out)
    emb = next(t for t in rep["tensors"] if t["name"] == "emb")
    assert emb["record_kind"] == "predicted"
    chain = emb["predicted"]["chain"]
    assert [c["file"] for c in chain] == ["step-000020.wcodec", "step-000000.wcodec"]
    assert chain[-1]["record_kind"] == "plain" and emb["predicted"]["depth"] == 2
    code, out = cli("inspect", arch / "step-000040.wcodec")
    assert "chain emb <- step-000020.wcodec:emb (predicted) <- step-000000.wcodec:emb (plain)" \
        in out.replace("\n", " ") or "step-000000.wcodec:emb (plain)" in out


def _copy_arch(built, tmp_path):
    import shutil
    _, arch, _ = built
    dst = tmp_path / "a"
    shutil.copytree(arch, dst)
    return dst


def test_missing_parent_exit_20(built, tmp_path):
    arch = _copy_arch(built, tmp_path)
    os.remove(arch / "step-000020.wcodec")
    code, out = cli("archive", "extract", arch, "step-000040", "-o", tmp_path / "x.safetensors")
    assert code == E.UnresolvedReference.exit_code == 20
    assert "UnresolvedReference" in out and "not found" in out and "step-000020" in out
    assert not (tmp_path / "x.safetensors").exists()
    # the keyframe after it does not depend on it
    code, _ = cli("archive", "extract", arch, "step-000060", "-o", tmp_path / "y.safetensors")
    assert code == 0
    code, out = cli("archive", "verify", arch)
    assert code == 20 and "missing" in out


def test_changed_parent_exit_20(built, tmp_path):
    arch = _copy_arch(built, tmp_path)
    p = arch / "step-000020.wcodec"
    data = bytearray(p.read_bytes())
    # re-encode the parent with other content under the same name
    from wcodec.writer import Writer
    from wcodec import dtypes as D
    with Writer(p) as w:
        w.add("emb", D.BY_NAME["float32"], (300, 32), np.zeros(9600, np.uint32))
    assert p.read_bytes() != bytes(data)
    code, out = cli("archive", "extract", arch, "step-000040", "-o", tmp_path / "x.safetensors")
    assert code == 20 and "has changed" in out, out


def test_lossy_no_drift(tmp_path):
    paths = series(tmp_path, n=5, seed=1)
    arch = tmp_path / "lossy"
    for p in paths:
        code, out = cli("archive", "add", arch, p, "--keyframe-every", 8, "--lossy", 0.05,
                        "--rounding", "nearest", "-q")
        assert code == 0, out
    a = Archive(arch)
    errs = []
    for p, e in zip(paths, a.checkpoints):
        got = a.read(e["name"])
        want = load_file(p)
        dt, shape, raw = got["ffn.w"]
        x = want["ffn.w"].astype(np.float64)
        y = raw.view(np.float32).astype(np.float64).reshape(shape)
        rms = np.sqrt(np.mean(want["ffn.w"].astype(np.float64) ** 2))
        errs.append(np.abs(x - y).max() / rms)
        assert got["pos_ids"][2].tobytes() == want["pos_ids"].tobytes()  # ints stay exact
        assert e["lossy"] == (not e["keyframe"])
    assert errs[0] == 0
    # each residual is quantized against the decoded predecessor: the error stays within half a
    # step (0.025 RMS, with slack for the RMS of the new checkpoint), it does not grow with k
    assert max(errs[1:]) <= 0.026, errs


def test_usage_errors(tmp_path, built):
    _, arch, paths = built
    code, out = cli("archive", "add", tmp_path / "z", paths[0], "--keyframe-every", 17)
    assert code == 2 and "1..16" in out
    code, out = cli("archive", "add", arch, paths[0])
    assert code == 2 and "already" in out
    code, out = cli("archive", "extract", arch, "nope", "-o", tmp_path / "n.safetensors")
    assert code == 2 and "no checkpoint named" in out
    code, out = cli("archive", "list", tmp_path)
    assert code == 2
