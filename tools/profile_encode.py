"""Where a lossless save_file's time goes: the whole save with 1 and 2 threads (wall, the calling
thread's CPU, the process's CPU, voluntary context switches), against the pool's work alone run in
a plain loop on one thread (every chunk's encode and CRCs, every tensor's SHA-256). What the save
takes beyond that loop is the writer's own cost: framing, writing, the pipeline, GIL hand-offs.

    python tools/profile_encode.py MODEL.pt [--out-dir /dev/shm] [--rounds 11]
    python tools/profile_encode.py --minilm fp16      # all-MiniLM-L6-v2 cast to fp16 / bf16 / fp32

MODEL.pt: a torch.save'd dict of tensors. Every figure is the median of --rounds runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import sys
import time

import torch

import wcodec
from wcodec.torch_interop import tensor_to_raw
from wcodec.writer import EncodeOptions, _chunk_block

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools.evalmodels


def pool_work(tensors: dict, opts: EncodeOptions) -> None:
    """The jobs save_file hands its pool, one after another on this thread."""
    for name, t in tensors.items():
        dtype, _, raw = tensor_to_raw(name, t)
        hashlib.sha256(raw).digest()
        el, ce, chain = raw.view(dtype.uint), opts.chunk_elements, opts.chain_for(dtype)
        for c in range(-(-el.size // ce)):
            _chunk_block((chain, dtype, el[c * ce:(c + 1) * ce], 0, 0, c))


def measure(fn, rounds: int) -> dict:
    rows = []
    for _ in range(rounds):
        cs = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
        m, p, t = time.thread_time(), time.process_time(), time.perf_counter()
        fn()
        rows.append((time.perf_counter() - t, time.thread_time() - m, time.process_time() - p,
                     resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - cs))
    keys = ("wall_ms", "caller_cpu_ms", "process_cpu_ms", "vcsw")
    return {k: statistics.median(r[i] for r in rows) * (1 if k == "vcsw" else 1e3)
            for i, k in enumerate(keys)}


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """MODEL.pt or --minilm, --out-dir, --rounds (shared with tools/ab_writer.py)."""
    ap.add_argument("model", nargs="?")
    ap.add_argument("--minilm", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--out-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else ".")
    ap.add_argument("--rounds", type=int, default=11)


def load_model(a, ap: argparse.ArgumentParser) -> dict:
    """The tensors that add_model_args' arguments name."""
    if a.minilm:
        from tools.evalmodels.minilm import load_state
        dt = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[a.minilm]
        return {k: v.to(dt).contiguous() for k, v in load_state().items()
                if v.is_floating_point()}
    if a.model:
        return torch.load(a.model)
    ap.error("give MODEL.pt or --minilm")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    a = ap.parse_args(argv)
    tensors = load_model(a, ap)
    out = os.path.join(a.out_dir, f"profile_encode_{os.getpid()}.wcd")
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    print(f"{len(tensors)} tensors, {size / 1e6:.1f} MB, output in {a.out_dir}")
    try:
        wcodec.save_file(tensors, out, threads=1)  # warm-up
        loop = measure(lambda: pool_work(tensors, EncodeOptions()), a.rounds)
        print(f"pool work alone, one thread: {loop['wall_ms']:.1f} ms")
        for threads in (1, 2):
            r = measure(lambda: wcodec.save_file(tensors, out, threads=threads), a.rounds)
            print(f"save_file threads={threads}: {r['wall_ms']:.1f} ms wall "
                  f"({size / r['wall_ms'] / 1e3:.0f} MB/s), calling thread "
                  f"{r['caller_cpu_ms']:.1f} ms CPU, process {r['process_cpu_ms']:.1f} ms CPU, "
                  f"{r['vcsw']:.0f} voluntary context switches")
        print(f"output {os.path.getsize(out)} bytes ({os.path.getsize(out) / size:.2%})")
    finally:
        if os.path.exists(out):
            os.unlink(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
