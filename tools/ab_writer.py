"""A/B of the writer's own code: save_file with the writer (writer.py, atomic.py, tensor_to_raw) of
an older commit against the working tree's, in one process, on the same codecs, runs interleaved
(old, new, old, new, ...), with 1 and 2 threads. Prints median wall time, process CPU and
voluntary context switches, and checks that both wrote the same bytes.

    python tools/ab_writer.py --ref 91f204f --minilm fp16 [--rounds 11] [--out-dir /dev/shm]
    python tools/ab_writer.py --ref 91f204f MODEL.pt

The old files are taken with `git show REF:path` and loaded as modules inside the wcodec package, so
everything else (codecs, layout, dtypes) is today's: only the writer's own cost differs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import wcodec
from wcodec import api
from wcodec.metadata import KEY_SOURCE_FORMAT

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tools.evalmodels
OLD = {"atomic": "codec/wcodec/atomic.py", "writer": "codec/wcodec/writer.py",
       "torch_interop": "codec/wcodec/torch_interop.py"}


def load_old(ref: str, folder: str):
    """(Writer, tensor_to_raw) of commit `ref`, as modules wcodec._ab_<name>."""
    mods = {}
    for name in ("atomic", "torch_interop", "writer"):  # writer imports the old atomic
        src = subprocess.run(["git", "-C", os.path.dirname(HERE), "show", f"{ref}:{OLD[name]}"],
                             check=True, capture_output=True, text=True).stdout
        src = src.replace("from .atomic import", "from ._ab_atomic import")
        path = os.path.join(folder, f"_ab_{name}.py")
        with open(path, "w") as f:
            f.write(src)
        spec = importlib.util.spec_from_file_location(f"wcodec._ab_{name}", path)
        m = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = m
        spec.loader.exec_module(m)
        mods[name] = m
    return mods["writer"].Writer, mods["torch_interop"].tensor_to_raw


def save_old(Writer, tensor_to_raw, tensors, path, threads):
    """save_file's lossless path, with the old writer."""
    with Writer(path, system_metadata={KEY_SOURCE_FORMAT: "api"},
                options=api._options(threads=threads), pipeline_bytes=api.PIPELINE_BYTES) as w:
        for name, t in tensors.items():
            w.add(name, *tensor_to_raw(name, t))


def main(argv=None) -> int:
    from tools.profile_encode import add_model_args, load_model
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--ref", required=True, help="the commit whose writer is 'old'")
    a = ap.parse_args(argv)
    tensors = load_model(a, ap)
    with tempfile.TemporaryDirectory() as tmp:
        Writer, to_raw = load_old(a.ref, tmp)
        outs = {k: os.path.join(a.out_dir, f"ab_writer_{k}_{os.getpid()}.wcd")
                for k in ("old", "new")}
        runs = {"old": lambda p, t: save_old(Writer, to_raw, tensors, p, t),
                "new": lambda p, t: wcodec.save_file(tensors, p, threads=t)}
        try:
            for k in runs:
                runs[k](outs[k], 1)  # warm-up
            for threads in (1, 2):
                rows = {k: [] for k in runs}
                for _ in range(a.rounds):
                    for k, fn in runs.items():
                        cs = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
                        c, t = time.process_time(), time.perf_counter()
                        fn(outs[k], threads)
                        rows[k].append((time.perf_counter() - t, time.process_time() - c,
                                        resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - cs))
                med = {k: [statistics.median(r[i] for r in v) for i in range(3)]
                       for k, v in rows.items()}
                print(f"threads={threads}: wall old {med['old'][0] * 1e3:.1f} ms, new "
                      f"{med['new'][0] * 1e3:.1f} ms (new/old {med['new'][0] / med['old'][0]:.3f})"
                      f"; process CPU old {med['old'][1] * 1e3:.1f}, new {med['new'][1] * 1e3:.1f}"
                      f" ms; voluntary context switches old {med['old'][2]:.0f}, new "
                      f"{med['new'][2]:.0f}")
            digests = {k: hashlib.sha256(open(p, "rb").read()).hexdigest() for k, p in outs.items()}
            print(f"same bytes: {digests['old'] == digests['new']} (sha256 {digests['new']})")
            return 0 if digests["old"] == digests["new"] else 1
        finally:
            for p in outs.values():
                if os.path.exists(p):
                    os.unlink(p)


if __name__ == "__main__":
    raise SystemExit(main())
