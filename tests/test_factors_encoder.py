"""The factor encoder (ranks from a budget, activation-aware SVD, automatic choice against
quantization) and the sensitivity profiler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import wcodec
from wcodec import dtypes as D
from wcodec import factor_encoder as FE
from wcodec.records.factors import Factors, reconstruct
from wcodec.records.quantized import Quantized
from wcodec.writer import EncodeOptions

F32 = D.BY_NAME["float32"]


def _recon(fz):
    return reconstruct(fz.factorization, fz.modes, [np.asarray(a) for a in fz.arrays])


def test_eps_budget_is_met_and_tight():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((48, 60)) * np.exp(-np.arange(60) / 8)[None, :]
    for method, kw in (("low_rank", {}), ("tucker", {}), ("tt", dict(cores=3))):
        for eps in (0.3, 0.1, 0.03):
            fz = FE.decompose(a.reshape(-1), a.shape, method=method, eps=eps, codec="float64",
                              **kw)
            err = np.linalg.norm(_recon(fz) - a.reshape(-1)) / np.linalg.norm(a)
            assert err <= eps * (1 + 1e-9), (method, eps, err)   # TT-SVD: δ = ε/√(d−1)‖A‖
    r1 = FE.decompose(a.reshape(-1), a.shape, eps=0.3, codec="float64").modes[0][2]
    r2 = FE.decompose(a.reshape(-1), a.shape, eps=0.03, codec="float64").modes[0][2]
    assert r1 < r2


def test_energy_and_params_targets():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 50))
    fz = FE.decompose(a.reshape(-1), a.shape, params=900, codec="float64")
    assert FE.param_count(fz.factorization, fz.modes) <= 900
    for m in ("tucker", "tt"):
        fz = FE.decompose(a.reshape(-1), a.shape, method=m, params=1200, codec="float64")
        assert FE.param_count(fz.factorization, fz.modes) <= 1200
    s = np.linalg.svd(a, compute_uv=False)
    r = FE.decompose(a.reshape(-1), a.shape, energy=0.9, codec="float64").modes[0][2]
    assert np.sum(s[:r] ** 2) >= 0.9 * np.sum(s ** 2) > np.sum(s[:r - 1] ** 2)


def test_activation_aware_svd_lowers_output_error():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((64, 80))
    d = np.exp(rng.normal(0, 1.5, 80))                  # a few input features dominate
    x = rng.standard_normal((500, 80)) * d[None, :]
    plain = _recon(FE.decompose(w.reshape(-1), w.shape, rank=16, codec="float64"))
    aware = _recon(FE.decompose(w.reshape(-1), w.shape, rank=16, codec="float64",
                                act_scale=np.sqrt(np.mean(x * x, 0))))
    e_plain = np.linalg.norm(x @ (w - plain.reshape(w.shape)).T)
    e_aware = np.linalg.norm(x @ (w - aware.reshape(w.shape)).T)
    assert e_aware < 0.9 * e_plain


def test_choose_never_picks_a_loser():
    rng = np.random.default_rng(3)
    o = EncodeOptions()
    iid = rng.standard_normal((96, 96)).astype(np.float32)
    b = FE.choose(F32, iid.shape, iid.reshape(-1).view(np.uint32), o, step=0.25, ranks=(4, 16))
    assert b["kind"] is Quantized                        # no structure: quantization wins
    low = (rng.standard_normal((96, 4)) @ rng.standard_normal((4, 96)) * 3
           + 0.05 * rng.standard_normal((96, 96))).astype(np.float32)
    b = FE.choose(F32, low.shape, low.reshape(-1).view(np.uint32), o, step=0.1, ranks=(4, 16))
    assert b["kind"] is Factors                         # strong low-rank part: factors win
    q = b["candidates"][0]
    assert b["size"] < q["size"] and b["mse"] <= q["mse"]
    for c in b["candidates"][1:]:                        # whatever was chosen beats quantization
        if c["size"] == b["size"]:
            assert c["mse"] <= q["mse"]


def test_profile_sensitivity_restores_weights_and_ranks_layers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    with torch.no_grad():
        model[2].weight.mul_(10.0)                      # the last layer dominates the output
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randn(64, 16)
    sens = wcodec.profile_sensitivity(model, x, noise=0.1)
    assert set(sens) == {"0.weight", "2.weight"}
    assert all(v > 0 for v in sens.values())
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
    act = wcodec.sensitivity.activation_scales(model, x)
    assert act["0.weight"].shape == (16,) and act["2.weight"].shape == (32,)
    assert np.allclose(act["0.weight"], x.double().pow(2).mean(0).sqrt().numpy())
