"""Where a lossless decode's time goes, piece by piece (the figures of docs/lossless.md "What falls
short"): opening the file, the native chunk batch alone over outputs already in memory (1 and 2
threads, with and without the chunk CRCs), and what first-touch page faults cost on this machine.

    python tools/profile_decode.py FILE.wcd [--rounds 15]

FILE is any .wcd written by wcodec (e.g. `wcodec encode` of a safetensors model, or
`wcodec.save_file`). Every figure is the median of --rounds runs. Needs the C kernels.
"""

from __future__ import annotations

import argparse
import mmap
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from wcodec import fastpath
from wcodec.reader import Reader


def median_ms(fn, rounds: int) -> float:
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args(argv)
    print(f"open (header, index, every record checked): "
          f"{median_ms(lambda: Reader(a.file).close(), a.rounds):.1f} ms")

    r = Reader(a.file)
    jobs = []  # (block, ids, crc, bytes, shape) of every plain chunk the native batch takes
    for info in r.tensors.values():
        s = info.streams[0]
        shape = fastpath.native_shape(s.chain, s.dtype)
        if info.record_kind != 1 or shape is None:
            continue
        for c, b in enumerate(s.chunk_blocks):
            n = (min((c + 1) * s.chunk_elements, s.elements) - c * s.chunk_elements) \
                * s.dtype.itemsize
            jobs.append((b, (info.index, 0, c), s.chunk_crc32c[c] if s.chunk_crc32c else None,
                         n, shape))
    total = sum(j[3] for j in jobs)
    out = np.zeros(total, np.uint8)  # touched: no page faults in what follows
    rows, crcless, off = [], [], 0
    for b, ids, crc, n, _ in jobs:
        rows.append(fastpath.job_row(r, b, ids, out[off:off + n], crc))
        crcless.append(fastpath.job_row(r, b, ids, out[off:off + n], None))
        off += n
    groups: dict = {}
    for row, job in zip(rows, jobs):
        groups.setdefault(job[4], []).append(row)

    def batch(selected, threads):
        def run(part):
            fastpath.run_batch(r, part[0], part[1], lambda k: None)
        parts = [(shape, rs[i::threads]) for shape, rs in selected.items() for i in range(threads)]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, parts))
    mb = total / 1e6
    for th in (1, 2):
        t = median_ms(lambda: batch(groups, th), a.rounds)
        print(f"native chunk batch, {th} thread(s), outputs in memory: {t:.1f} ms "
              f"({mb / t * 1e3:.0f} MB/s of {mb:.1f} MB)")
    no_crc = {}
    for row, job in zip(crcless, jobs):
        no_crc.setdefault(job[4], []).append(row)
    print(f"  the same without the chunk CRCs: {median_ms(lambda: batch(no_crc, 1), a.rounds):.1f} ms")

    def touch(sizes):  # fresh anonymous memory each time, as after other programs' frees
        maps = [mmap.mmap(-1, n) for n in sizes]
        for m in maps:
            np.frombuffer(m, np.uint8)[::4096] = 1
    per_tensor = [info.nbytes for info in r.tensors.values() if info.nbytes]
    print(f"first touch of fresh memory for the outputs (4 KiB pages): "
          f"{median_ms(lambda: touch(per_tensor), a.rounds):.1f} ms")
    r.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
