"""Rate control (wcodec.ratecontrol, docs/lossy.md): every target holds on the written file, the
encode and decode are deterministic, sensitivity weights steer the error, CLI and API agree."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import wcodec
from wcodec.reader import Reader


def _model_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    s = {
        "emb.weight": torch.randn(400, 96, generator=g) * 0.05,
        "l1.weight": torch.randn(192, 96, generator=g) * 0.08,
        "l1.bias": torch.randn(192, generator=g) * 0.01,
        "l2.weight": (torch.randn(96, 192, generator=g) * 0.02).to(torch.bfloat16),
        "norm.weight": 1 + 0.1 * torch.randn(96, generator=g),
        "pos_ids": torch.arange(64),
    }
    s["l1.weight"][3, 7] = 2.5     # an outlier: never clipped
    return s


def _floats(state):
    return {k: v for k, v in state.items() if v.is_floating_point()}


def _decoded(path):
    return wcodec.load_file(path)


def _rel_errors(a, b):
    out = {}
    for k, x in _floats(a).items():
        x64, y64 = x.double(), b[k].double()
        out[k] = float(torch.linalg.vector_norm(x64 - y64) / torch.linalg.vector_norm(x64))
    return out


def _snr(a, b):
    sig = sum(float((x.double() ** 2).sum()) for x in _floats(a).values())
    err = sum(float(((x.double() - b[k].double()) ** 2).sum()) for k, x in _floats(a).items())
    return 10 * math.log10(sig / err)


def _weights(state):
    return sum(v.numel() for v in _floats(state).values())


@pytest.mark.parametrize("bpw", [3.0, 6.0])
def test_bits_per_weight_budget_holds_on_the_file(tmp_path, bpw):
    s = _model_state()
    before = {k: v.clone() for k, v in s.items()}
    p = str(tmp_path / "m.wcd")
    rep = wcodec.save_file(s, p, bits_per_weight=bpw)
    real = 8 * os.path.getsize(p) / _weights(s)
    assert real <= bpw
    assert real > bpw - 0.6        # the budget is used, not wasted
    assert rep["bits_per_weight"] == pytest.approx(real)
    d = _decoded(p)
    assert torch.equal(d["pos_ids"], s["pos_ids"])        # non-float tensors stay exact
    assert d["l2.weight"].dtype == torch.bfloat16
    assert abs(float(d["l1.weight"][3, 7]) - 2.5) < 0.1   # the outlier survives
    assert all(torch.equal(before[k], s[k]) for k in s)   # input untouched
    assert _snr(s, d) > 5.5 * bpw                          # about 6 dB per bit


def test_target_snr_holds(tmp_path):
    s = _model_state(1)
    p = str(tmp_path / "m.wcd")
    wcodec.save_file(s, p, target_snr=32.0)
    snr = _snr(s, _decoded(p))
    assert 32.0 <= snr < 34.0


def test_max_rel_error_holds_per_tensor(tmp_path):
    s = _model_state(2)
    p = str(tmp_path / "m.wcd")
    wcodec.save_file(s, p, max_rel_error=0.02)
    rel = _rel_errors(s, _decoded(p))
    assert max(rel.values()) <= 0.02
    assert max(rel.values()) > 0.005          # lossy, not lossless at full size
    with Reader(p) as r:                      # the stored error agrees with the decoded one
        for k in _floats(s):
            e = r.info(k).error
            if e is not None:
                assert math.sqrt(e["mean_squared_error"] / e["signal_power"]) == \
                    pytest.approx(rel[k], rel=1e-6)


def test_encode_and_decode_are_deterministic(tmp_path):
    s = _model_state(3)
    a, b = str(tmp_path / "a.wcd"), str(tmp_path / "b.wcd")
    wcodec.save_file(s, a, bits_per_weight=4.0)
    wcodec.save_file(s, b, bits_per_weight=4.0, threads=1)
    assert open(a, "rb").read() == open(b, "rb").read()
    d1, d2 = _decoded(a), _decoded(a)
    assert all(torch.equal(d1[k], d2[k]) for k in d1)


def test_non_finite_tensor_stays_lossless(tmp_path):
    s = _model_state(4)
    s["odd"] = torch.tensor([1.0, float("nan"), float("inf"), -0.0])
    p = str(tmp_path / "m.wcd")
    wcodec.save_file(s, p, bits_per_weight=4.0)
    with Reader(p) as r:
        assert r.info("odd").kind_name == "plain"
    d = _decoded(p)
    assert d["odd"].view(torch.int32).tolist() == s["odd"].view(torch.int32).tolist()


def test_sensitivity_steers_the_error(tmp_path):
    """With calibration, a tensor whose errors reach the output 10x amplified gets a smaller error
    than an equally sized one that reaches it directly; without, both get the same step."""
    g = torch.Generator().manual_seed(0)
    state = {"a": torch.randn(256, 128, generator=g) * 0.05,
             "b": torch.randn(256, 128, generator=g) * 0.05}
    x = torch.randn(16, 128, generator=g)
    p_plain, p_cal = str(tmp_path / "a.wcd"), str(tmp_path / "b.wcd")
    wcodec.save_file(state, p_plain, bits_per_weight=4.0)

    def forward(st):
        return torch.cat([10.0 * (x @ st["a"].T), x @ st["b"].T], dim=1)
    wcodec.save_file(state, p_cal, bits_per_weight=4.0, forward=forward)
    ra, rb = _rel_errors(state, _decoded(p_plain)), _rel_errors(state, _decoded(p_cal))
    assert ra["a"] == pytest.approx(ra["b"], rel=0.2)
    assert rb["a"] < 0.5 * rb["b"]
    assert 8 * os.path.getsize(p_cal) <= 4.0 * 2 * 256 * 128


def test_cli_targets_and_inspect(tmp_path):
    import safetensors.torch as st
    s = _model_state(5)
    src = str(tmp_path / "m.safetensors")
    st.save_file(s, src)
    out = str(tmp_path / "m.wcd")
    cmd = [sys.executable, "-m", "wcodec", "encode", src, "-o", out, "-f",
           "--bits-per-weight", "5"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "bits/weight" in r.stderr
    assert 8 * os.path.getsize(out) / _weights(s) <= 5.0
    r = subprocess.run([sys.executable, "-m", "wcodec", "inspect", out, "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    text = json.dumps(doc)
    assert "mean_squared_error" in text and "signal_power" in text
    r = subprocess.run(cmd[:-2] + ["--bits-per-weight", "4", "--target-snr", "30"],
                       capture_output=True, text=True)
    assert r.returncode == 2
