"""Peak memory of encode, decode and verify grows with the largest tensor, not with the file.

Each command runs in a fresh subprocess and reports its peak resident set (ru_maxrss, which also
counts pages of mapped files). A run on a one-tensor file of a few bytes gives the baseline
(interpreter, torch, numpy, thread pool); the multi-tensor file holds 16 tensors of 8 MiB, so a
tool that kept the whole input, output or map resident would exceed the bound by far."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file as st_save

TENSORS, ROWS, COLS = 16, 2048, 1024          # 16 × 8 MiB of float32
LARGEST = ROWS * COLS * 4
FILE = TENSORS * LARGEST
BOUND = 6 * LARGEST + 16 * 2**20              # a small multiple of the largest tensor + a constant

PEAK = """
import resource, sys
from wcodec.cli import entry
sys.argv = ["wcodec", *sys.argv[1:]]
try:
    entry()
except SystemExit as e:
    if e.code:
        raise
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak(*args) -> int:
    r = subprocess.run([sys.executable, "-c", PEAK, *map(str, args)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("mem")
    g = torch.Generator().manual_seed(1)
    st_save({f"layer.{i}.weight": torch.randn(ROWS, COLS, generator=g) for i in range(TENSORS)},
            str(d / "big.safetensors"))
    st_save({"t": torch.ones(4)}, str(d / "tiny.safetensors"))
    return d


@pytest.mark.parametrize("step", ["encode", "verify", "decode"])
def test_peak_memory_is_bounded_by_the_largest_tensor(files, step):
    d = files
    for name in ("tiny", "big"):
        if not (d / f"{name}.wcodec").exists():
            assert peak("encode", d / f"{name}.safetensors", "-o", d / f"{name}.wcodec", "-q") > 0
    if step == "encode":
        cmd = lambda n: ("encode", d / f"{n}.safetensors", "-o", d / f"{n}.again.wcodec", "-q",
                         "-f")
    elif step == "verify":
        cmd = lambda n: ("verify", d / f"{n}.wcodec")
    else:
        cmd = lambda n: ("decode", d / f"{n}.wcodec", "-o", d / f"{n}.out.safetensors", "-q",
                         "-f")
    base, big = peak(*cmd("tiny")), peak(*cmd("big"))
    grown = big - base
    assert grown <= BOUND, (f"{step}: peak grew by {grown / 2**20:.0f} MiB for a "
                            f"{FILE / 2**20:.0f} MiB file of {LARGEST / 2**20:.0f} MiB tensors; "
                            f"bound {BOUND / 2**20:.0f} MiB")
    if step == "decode":
        assert (d / "big.out.safetensors").read_bytes() == (d / "big.safetensors").read_bytes()
