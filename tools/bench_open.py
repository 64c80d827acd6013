"""Time to open a .wcd file (Reader(path).close(): header, footer, INDEX parse, every check of the
block table and the records), the current reader against the reader of a baseline commit, in one
process, interleaved, median of N rounds.

    python tools/bench_open.py FILE [FILE ...] [--rounds 30] [--baseline e5cadcd] [--load-file]

The baseline's codec/wcodec/reader.py and records/plain.py are read with `git show` and imported
beside the installed package (they use its other modules); plain's check is swapped in while the
baseline reader runs. --load-file also times wcodec.load_file(FILE, threads=1) with each reader
patched into wcodec.api. Run from outside codec/wcodec. Made for issue 4 (open was ~16 % of a
1-thread whole-file decode of MiniLM).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(rev: str, path: str, name: str):
    src = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:{path}"], check=True,
                         capture_output=True, text=True).stdout
    fd, tmp = tempfile.mkstemp(suffix=".py")
    with os.fdopen(fd, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(name, tmp)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    os.unlink(tmp)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--baseline", default=None, help="commit of the reader to compare with")
    ap.add_argument("--load-file", action="store_true",
                    help="also time load_file(threads=1) with each reader")
    a = ap.parse_args()

    import wcodec
    import wcodec.api as api
    import wcodec.reader as current
    from wcodec.records import Plain
    readers = {"current": (current, Plain.__dict__["check"])}
    if a.baseline:
        old = _load(a.baseline, "codec/wcodec/reader.py", "wcodec._bench_open_reader")
        old_plain = _load(a.baseline, "codec/wcodec/records/plain.py",
                          "wcodec.records._bench_open_plain")
        readers = {"baseline": (old, old_plain.Plain.__dict__["check"]), **readers}
    for path in a.files:
        times: dict[str, list[float]] = {k: [] for k in readers}
        for r in range(a.rounds + 1):  # round 0 warms the page cache and imports
            for tag, (mod, check) in readers.items():
                Plain.check = check
                t = time.perf_counter()
                mod.Reader(path).close()
                if r:
                    times[tag].append(time.perf_counter() - t)
        Plain.check = readers["current"][1]
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        with current.Reader(path) as rd:
            what = f"{len(rd.tensors)} tensors, {len(rd.blocks)} blocks"
        line = f"{os.path.basename(path)} ({what}): current {med['current']:.2f} ms"
        if "baseline" in med:
            line += (f", baseline {a.baseline} {med['baseline']:.2f} ms "
                     f"({med['baseline'] / med['current']:.2f}x)")
        print(line, flush=True)
        if a.load_file:
            times = {k: [] for k in readers}
            for r in range(a.rounds // 2 + 1):
                for tag, (mod, check) in readers.items():
                    api.Reader, Plain.check = mod.Reader, check
                    t = time.perf_counter()
                    out = wcodec.load_file(path, threads=1)
                    if r:
                        times[tag].append(time.perf_counter() - t)
                    del out
            api.Reader, Plain.check = current.Reader, readers["current"][1]
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            line = f"  load_file(threads=1): current {med['current']:.1f} ms"
            if "baseline" in med:
                line += f", with the baseline reader {med['baseline']:.1f} ms"
            print(line, flush=True)


if __name__ == "__main__":
    main()
