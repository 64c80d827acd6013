"""Factored torch layers (wcodec.factored_modules) compute what the factor record decodes to."""

import numpy as np
import torch

from wcodec import factor_encoder as FE
from wcodec.factored_modules import LowRankLinear, TTLinear, dense_of, replace_linear


def test_lowrank_and_tt_match_the_decoded_weight():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((24, 36))
    x = torch.randn(5, 3, 36)
    b = torch.randn(24)
    for fz, cls in ((FE.decompose(w.reshape(-1), w.shape, rank=6), LowRankLinear),
                    (FE.decompose(w.reshape(-1), w.shape, method="tt", rank=[5, 4],
                                  modes=([2, 3, 4], [3, 4, 3])), TTLinear)):
        m = cls.from_factorization(fz, bias=b)
        ref = x @ dense_of(fz).T + b
        assert m(x).shape == (5, 3, 24)
        assert torch.allclose(m(x), ref, rtol=1e-4, atol=1e-4)
        n_params = sum(p.numel() for p in m.parameters())
        assert n_params < w.size + 24                     # smaller than the dense layer


def test_replace_linear():
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU())
    w = model[0].weight.detach().double().numpy()
    fz = FE.decompose(w.reshape(-1), w.shape, rank=6)     # full rank: same function
    layer = LowRankLinear.from_factorization(fz, bias=model[0].bias.detach().clone())
    x = torch.randn(4, 8)
    before = model(x)
    replace_linear(model, "0", layer)
    assert model[0] is layer
    assert torch.allclose(model(x), before, atol=1e-5)
