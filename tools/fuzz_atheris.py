"""Coverage-guided fuzzing of the wcodec reader with atheris (libFuzzer), as long as asked.

    python tools/fuzz_atheris.py --minutes 15 --out /tmp/wcodec-fuzz

Seeds: every conformance vector (valid, invalid and acceptable) and files freshly encoded at start
(every record kind that exists: plain, quantized, bands, predicted; both chains; several
alignments; metadata; files without digests). Half of the mutations are libFuzzer's own byte-level
ones, half come from the structure-aware hostile-file kit (tests/_wcd_hostile.py: inflated counts
and lengths with the CRCs recomputed, aliased offsets, swapped blocks, forged footers, lane and
zstd header damage).

Property (the same as tests/test_fuzz.py): opening the file, verify() and reading every tensor
either succeed with output that matches the tensor's SHA-256 or raise a wcodec FormatError; never
another exception, never more than --time-bound CPU seconds per file, never more than
--memory-bound MiB of peak resident memory above the level at the start of the check.

A violation does not stop the run: its input is saved under OUT/crashes/ with the message, and
the run goes on. OUT/stats.json is rewritten every 200 executions and at the end (executions,
violations, seconds). Exit code: 0 when no violation was found, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["wcodec"]):
    import wcodec  # noqa: F401
    from wcodec.limits import Limits
    from wcodec import reader as _reader  # noqa: F401
    from wcodec.records import bands as _b, plain as _p, predicted as _pr, quantized as _q  # noqa
    from wcodec.codecs import lanes as _l, planes as _pl  # noqa: F401
import _wcd_hostile as H  # noqa: E402

STATE = {"execs": 0, "violations": 0, "rejected": 0, "ok": 0, "partial": 0, "t0": time.time()}
CFG = {}


def extra_seeds(folder: str) -> list[str]:
    """Freshly encoded files with the record kinds make_seeds does not cover (bands, predicted)."""
    import numpy as np
    from wcodec import dtypes as D
    from wcodec.writer import EncodeOptions, Writer
    out = []
    rng = np.random.default_rng(99)
    x = rng.standard_normal((12, 40)).astype(np.float32)
    try:
        from wcodec.records.bands import Bands
        p = os.path.join(folder, "bands.wcd")
        with Writer(p, options=EncodeOptions(threads=1, chunk_elements=128)) as w:
            w.add("b3", D.by_name("float32"), x.shape, x, kind=Bands, bands=3, rel_step=0.1)
            w.add("b2", D.by_name("float32"), x.shape, x, kind=Bands, bands=2, rel_step=0.2,
                  scales="channel", quantizer="uniform", lossless=False)
        out.append(p)
    except Exception as e:  # a kind that is not there (yet) must not stop the run
        print(f"fuzz_atheris: no bands seed ({type(e).__name__}: {e})", file=sys.stderr)
    try:
        from wcodec.records.predicted import Predicted, Reference
        y = (x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)
        p = os.path.join(folder, "predicted.wcd")
        with Writer(p, options=EncodeOptions(threads=1, chunk_elements=128)) as w:
            w.add("base", D.by_name("float32"), x.shape, x)
            w.add("next", D.by_name("float32"), y.shape, y, kind=Predicted,
                  reference=Reference("base"), ref=x.view(np.uint8).reshape(-1))
            w.add("xor", D.by_name("float32"), y.shape, y, kind=Predicted,
                  reference=Reference("base"), ref=x.view(np.uint8).reshape(-1), residual="xor")
        out.append(p)
    except Exception as e:
        print(f"fuzz_atheris: no predicted seed ({type(e).__name__}: {e})", file=sys.stderr)
    for name, make in (("bomb_fill.wcd", lambda p: H.fill_bomb(p, 1 << 16)),
                       ("bomb_zwin.wcd", lambda p: H.zstd_window_bomb(p, 20)),
                       ("bomb_records.wcd", lambda p: H.many_records(p, 50))):
        try:
            out.append(make(os.path.join(folder, name)))
        except Exception as e:
            print(f"fuzz_atheris: no {name} seed ({type(e).__name__}: {e})", file=sys.stderr)
    return out


def save_stats(final=False) -> None:
    s = dict(STATE, seconds=round(time.time() - STATE["t0"], 1), final=final)
    s.pop("t0")
    tmp = os.path.join(CFG["out"], "stats.json.tmp")
    with open(tmp, "w") as f:
        json.dump(s, f, indent=1)
    os.replace(tmp, os.path.join(CFG["out"], "stats.json"))


def check(data: bytes) -> None:
    path = CFG["scratch"]
    with open(path, "wb") as f:
        f.write(data)
    STATE["execs"] += 1
    threads = 2 if STATE["execs"] % 4 == 0 else 1
    try:
        o = H.check_file(path, limits=CFG["limits"], time_bound=CFG["time_bound"],
                         memory_bound=CFG["memory_bound"], threads=threads, memory="rss")
        STATE[o.kind] = STATE.get(o.kind, 0) + 1
    except H.PropertyViolation as e:
        STATE["violations"] += 1
        digest = hashlib.sha256(data).hexdigest()[:16]
        crash = os.path.join(CFG["out"], "crashes", digest + ".wcd")
        with open(crash, "wb") as f:
            f.write(data)
        cause = e.__cause__
        with open(crash + ".txt", "w") as f:
            f.write(f"{e}\n{type(cause).__name__ if cause else ''}: {cause}\n")
        print(f"fuzz_atheris: VIOLATION {e} -> {crash}", file=sys.stderr)
    if STATE["execs"] % 200 == 0:
        save_stats()


def TestOneInput(data: bytes) -> None:  # noqa: N802 (atheris' name)
    check(bytes(data))


def CustomMutator(data: bytes, max_size: int, seed: int) -> bytes:  # noqa: N802
    rng = random.Random(seed)
    if data and rng.random() < 0.5:
        try:
            out = H.mutate(bytes(data), rng, rounds=rng.randint(1, 3))
        except Exception:
            out = b""
        if out and len(out) <= max_size:
            return out
    return atheris.Mutate(data, max_size)


def _limit_address_space(extra_mib: int) -> None:
    """Cap the address space a little above what the process maps at start, so that a runaway
    allocation raises MemoryError inside the check (recorded with its input as a violation)
    instead of libFuzzer killing the whole run."""
    import resource
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
    cap = vm + (extra_mib << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "wcodec-fuzz"))
    ap.add_argument("--time-bound", type=float, default=3.0, help="CPU seconds per file")
    ap.add_argument("--memory-bound", type=int, default=192, help="MiB of peak RSS per file")
    ap.add_argument("--max-tensor-bytes", type=int, default=16 << 20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--address-space", type=int, default=3072,
                    help="MiB of address space allowed above the level at start")
    args, rest = ap.parse_known_args()
    out = os.path.abspath(args.out)
    corpus = os.path.join(out, "corpus")
    os.makedirs(os.path.join(out, "crashes"), exist_ok=True)
    os.makedirs(corpus, exist_ok=True)
    fresh = os.path.join(out, "fresh")
    os.makedirs(fresh, exist_ok=True)
    seeds = H.make_seeds(fresh) + extra_seeds(fresh) + H.conformance_seeds(ROOT)
    for p in seeds:
        shutil.copy(p, os.path.join(corpus, "seed_" + os.path.basename(p)))
    CFG.update(out=out, scratch=os.path.join(out, "current.wcd"),
               limits=Limits(max_tensor_bytes=args.max_tensor_bytes, max_index_bytes=4 << 20),
               time_bound=args.time_bound, memory_bound=args.memory_bound << 20)
    if not H.rss_tracking_available():
        print("fuzz_atheris: cannot reset peak RSS on this system", file=sys.stderr)
        return 2
    _limit_address_space(args.address_space)
    print(f"fuzz_atheris: {len(seeds)} seeds, {args.minutes} min, output in {out}",
          file=sys.stderr)
    argv = [sys.argv[0], corpus, f"-max_total_time={int(args.minutes * 60)}",
            "-max_len=1100000", "-timeout=60", "-rss_limit_mb=0", f"-seed={args.seed}",
            "-print_final_stats=1"] + rest
    atheris.Setup(argv, TestOneInput, custom_mutator=CustomMutator)
    import atexit
    atexit.register(lambda: (save_stats(final=True), print(
        f"fuzz_atheris: {STATE['execs']} executions, {STATE['violations']} violations",
        file=sys.stderr)))
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
