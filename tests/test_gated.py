"""Band-gated inference (wcodec.gated) on a small CNN encoded as real 3-band records: forced band
counts match the merged weights, additions are per sample and in one pass, calibration hits its
rate, and the MAC accounting adds up."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from wcodec.api import save_file  # noqa: E402
from wcodec.gated import GatedModel, band_prefixes, calibrate  # noqa: E402


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = torch.relu(self.dw(x))
        x = torch.relu(self.pw(x)).mean((2, 3))
        return self.fc(x)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    torch.manual_seed(0)
    net = Net().eval()
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    path = str(tmp_path_factory.mktemp("gated") / "n.wcd")
    save_file(sd, path, bands=3, band_options=dict(band1_bits=2.0, scales="channel"))
    pre = band_prefixes(path, [f"{n}.weight" for n in ("conv", "dw", "pw", "fc")])
    x = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = net(x)
    ref1 = Net().eval()
    ref1.load_state_dict({**sd, **{k: v[0] for k, v in pre.items()}})
    with torch.no_grad():
        band1 = ref1(x)
    return sd, pre, x, full, band1


@pytest.fixture()
def setup(data):
    sd, pre, x, full, band1 = data
    net = Net().eval()
    net.load_state_dict(sd)
    return GatedModel(net, pre), x, full, band1


def test_forced_bands(setup):
    gm, x, full, band1 = setup
    with torch.no_grad():
        y1, y3 = gm(x, bands=1), gm(x, bands=3)
    assert torch.allclose(y1, band1, atol=1e-5)
    assert torch.allclose(y3, full, atol=1e-5)
    assert (y1 - full).abs().max() > 1e-3          # band 1 is coarse: the test can fail
    for k in (1, 2, 3):
        with torch.no_grad():
            gm(x, bands=k)
        assert gm.stats["compute_vs_plain"] == pytest.approx(float(k))


def test_per_sample_single_pass(setup):
    gm, x, full, band1 = setup
    calls = []
    for g in gm.layers:
        g.register_forward_hook(lambda m, i, o: calls.append(m.name))
        g.selector = lambda layer, j, score: torch.arange(score.shape[0]) == 0   # sample 0 only
    with torch.no_grad():
        y = gm(x)
    assert calls == ["conv", "dw", "pw", "fc"]       # every layer once: one pass
    assert torch.allclose(y[0], full[0], atol=1e-5)
    assert torch.allclose(y[1:], band1[1:], atol=1e-5)
    n = len(gm.layers)
    assert gm.stats["layer_fire_rate"][2] == pytest.approx(1 / 40)
    assert gm.stats["layer_fire_rate"][3] == pytest.approx(1 / 40)
    assert len(calls) == n


@pytest.mark.parametrize("rate", [0.0, 0.25, 1.0])
def test_calibration_hits_rate(setup, rate):
    gm, x, full, band1 = setup
    th = calibrate(gm, [x[:20], x[20:]], rate)
    assert set(th) == {"conv", "dw", "pw", "fc"}
    with torch.no_grad():
        y = gm(x)
    fired = gm.stats["layer_fire_rate"]
    # the first layer sees the same inputs as in calibration: exactly the quantile's share
    first = gm.layers[0]
    s = x.flatten(1).pow(2).mean(1).sqrt()
    assert float((s > first.t[0]).float().mean()) == pytest.approx(rate, abs=1 / 40)
    # later layers see inputs changed by earlier expansions: about the rate, not exactly
    assert (fired[2] == 0) == (rate == 0) and fired[2] <= min(1.0, 2 * rate)
    assert fired[3] <= fired[2]
    if rate == 0.0:
        assert torch.allclose(y, band1, atol=1e-5)
    if rate == 1.0:
        calibrate(gm, [x], rate, band3_share=1.0)      # every layer, every band
        with torch.no_grad():
            assert torch.allclose(gm(x), full, atol=1e-5)
    gm.set_random_gates(rate)
    with torch.no_grad():
        gm(x)
    gm.clear_random_gates()
    assert gm.stats["layer_fire_rate"][2] == pytest.approx(rate, abs=0.15)
