"""Atomic output under SIGKILL (W-WRT-02, issue 8): a real subprocess encoding (and one decoding)
a file of a few tens of MB is killed with SIGKILL at several points, from just after start to
inside the index/footer/fsync/rename phase. Afterwards the target path is either absent (or still
the previous, intact file) or the new, complete file: verify passes and every tensor decodes to
what was encoded. Nothing but the target and hidden, recognizably named temporary files
(`.<name>.wcodec-<host>-<pid>-<rand>.tmp`) is left, and the next write of the same target removes
the dead writer's temporary files."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from wcodec import atomic
from wcodec.reader import Reader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TENSORS = 6
ELEMENTS = 3 << 17  # 6 float32 tensors of 1.5 MiB: 9 MiB to encode

CHILD = r"""
import sys, numpy as np
from wcodec import dtypes as D
from wcodec.writer import EncodeOptions, Writer
target, seed, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
with Writer(target, options=EncodeOptions(threads=1, level=1, chunk_elements=1 << 16)) as w:
    print("open", flush=True)
    for i in range(n):
        w.add(f"t{i}", D.by_name("float32"), (k,), rng.standard_normal(k).astype(np.float32))
        print(f"added {i}", flush=True)
    print("closing", flush=True)
print("done", flush=True)
"""


def expected(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {f"t{i}": hashlib.sha256(rng.standard_normal(ELEMENTS).astype(np.float32)).digest()
            for i in range(N_TENSORS)}


def check_target(path, want: dict) -> None:
    with Reader(path) as r:
        assert r.verify() == []
        assert sorted(r.keys()) == sorted(want)
        for name, digest in want.items():
            assert hashlib.sha256(r.read_bytes(name)).digest() == digest, name


def leftovers(folder, target) -> list[str]:
    """Everything in the folder except the target and other known files."""
    return sorted(n for n in os.listdir(folder) if n != os.path.basename(target))


def spawn(target, seed):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "codec"))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(seed),
                             str(N_TENSORS), str(ELEMENTS)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(target.parent))


def kill_after(proc, marker: str, delay: float) -> list[str]:
    """Read the child's progress lines until `marker`, wait `delay` s, SIGKILL it."""
    seen = []
    while True:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.strip())
        if line.strip() == marker:
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return seen


# (marker, delay): from the first bytes to the index, the fsync and the rename
POINTS = [("open", 0.0), ("added 0", 0.0), ("added 3", 0.01), ("added 5", 0.0),
          ("closing", 0.0), ("closing", 0.02), ("closing", 0.3)]


@pytest.fixture(scope="module")
def want():
    return expected(7)


def test_writer_killed_leaves_target_absent_or_complete(tmp_path, want):
    outcomes = []
    for k, (marker, delay) in enumerate(POINTS):
        folder = tmp_path / f"k{k}"
        folder.mkdir()
        target = folder / "model.wcodec"
        p = spawn(target, 7)
        kill_after(p, marker, delay)
        # late points race the writer: on a fast machine it may finish before the signal lands,
        # and then the target must simply be complete
        assert p.returncode in (-signal.SIGKILL, 0), p.returncode
        if p.returncode == 0:
            assert target.exists()
        if target.exists():
            check_target(target, want)
            outcomes.append("complete")
        else:
            outcomes.append("absent")
        rest = leftovers(folder, target)
        assert all(atomic._TMP_RE.match(n) for n in rest), rest
        assert all(n.startswith(".model.wcodec.wcodec-") for n in rest), rest
        # the dead writer's temporary files are recognized and removed by the next writer
        assert [os.path.basename(x) for x in atomic.stale_temp_files(target)] == rest
    # the test must have killed writers mid-write, not only after they finished: the first two
    # points leave five or six tensors still to encode when the signal is sent
    assert outcomes[:2] == ["absent", "absent"], outcomes
    print("\nkill outcomes:", outcomes)


def test_killed_overwrite_keeps_the_old_file(tmp_path, want):
    """Replacing an existing file: a kill leaves the old file (intact) or the new one."""
    target = tmp_path / "model.wcodec"
    p = spawn(target, 7)
    p.communicate()
    assert p.returncode == 0
    old = target.read_bytes()
    new_want = expected(8)
    results = []
    for marker, delay in [("added 2", 0.0), ("closing", 0.01)]:
        p = spawn(target, 8)
        kill_after(p, marker, delay)
        data = target.read_bytes()
        if data == old:
            results.append("old")
        else:
            check_target(target, new_want)
            results.append("new")
            target.write_bytes(old)
    assert "old" in results
    # a finished writer cleans up every temporary file the killed ones left
    p = spawn(target, 8)
    p.communicate()
    assert p.returncode == 0
    check_target(target, new_want)
    assert leftovers(tmp_path, target) == []


def test_decode_killed_leaves_output_absent_or_complete(tmp_path, want):
    src = tmp_path / "model.wcodec"
    p = spawn(src, 7)
    p.communicate()
    assert p.returncode == 0
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "codec"))
    outcomes = []
    for k, delay in enumerate((0.3, 0.6, 1.2)):
        out = tmp_path / f"d{k}" / "model.safetensors"
        out.parent.mkdir()
        proc = subprocess.Popen([sys.executable, "-m", "wcodec.cli", "decode", "-q", "--threads",
                                 "1", str(src), "-o", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():
            from safetensors.numpy import load_file
            got = load_file(str(out))
            assert {n: hashlib.sha256(v).digest() for n, v in got.items()} == want
            outcomes.append("complete")
        else:
            outcomes.append("absent")
        rest = leftovers(out.parent, out)
        assert all(n.startswith(".model.safetensors.wcodec-") and n.endswith(".tmp")
                   for n in rest), rest
    print("\ndecode kill outcomes:", outcomes)
