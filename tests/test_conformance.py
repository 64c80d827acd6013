"""The conformance suite (conformance/README.md) checked end to end:

- the generator rebuilds every published vector byte for byte, and the same manifest;
- every decoder rule of spec/ that says MUST is exercised by at least one vector;
- the reference decoder (in-process, through the real CLI command) and the educational decoder
  (a subprocess, as a third party would run it) pass 100 % of the vectors;
- copies of the educational decoder with ONE check removed each fail at least one vector;
- the harness fails decoders that accept everything, reject everything or hang.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import typer

from wcodec import harness
from wcodec.cli import app

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conformance"
SPEC = ROOT / "spec"
MANIFEST = CONF / "manifest.json"
VECTORS = CONF / "vectors"
EDU = CONF / "edu_decoder.py"
PY = shlex.quote(sys.executable)


def run_suite(decoder, **kw) -> dict:
    """The harness over this checkout's vectors (not those next to the installed wcodec)."""
    return harness.run_suite(decoder, manifest_path=MANIFEST, vectors_dir=VECTORS, **kw)


def manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def failures(report: dict) -> str:
    bad = [f"{r['id']}: {r['outcome']}: {r['reason']}" for r in report["vectors"] if not r["passed"]]
    return "\n".join(bad[:40]) + (f"\n... {len(bad) - 40} more" if len(bad) > 40 else "")


# ================================================================================================
# 1. write-once: the generator rebuilds every published byte
# ================================================================================================
def test_generator_rebuilds_every_published_vector(tmp_path):
    out = tmp_path / "vectors"
    built_manifest = tmp_path / "manifest.json"
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_vectors.py"), "--out", str(out),
                        "--manifest", str(built_manifest)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    published = {f.name for f in VECTORS.glob("*.wcd")}
    rebuilt = {f.name for f in out.glob("*.wcd")}
    assert published == rebuilt, (f"only published: {sorted(published - rebuilt)[:10]}; "
                                  f"only rebuilt: {sorted(rebuilt - published)[:10]}")
    changed = [n for n in sorted(published)
               if (VECTORS / n).read_bytes() != (out / n).read_bytes()]
    assert not changed, f"published vectors changed (they are write-once): {changed}"
    assert built_manifest.read_text(encoding="utf-8") == MANIFEST.read_text(encoding="utf-8"), \
        "conformance/manifest.json differs from the generator's (run python tools/gen_vectors.py)"


def test_manifest_describes_the_files():
    m = harness.load_manifest(MANIFEST)      # schema and required fields
    ids = [v["id"] for v in m["vectors"]]
    assert len(ids) == len(set(ids))
    prefix = {"valid": "v_", "invalid": "x_", "acceptable": "a_"}
    for v in m["vectors"]:
        assert v["id"].startswith(prefix[v["expected"]]), v["id"]
        assert v["file"] == v["id"] + ".wcd"
        data = (VECTORS / v["file"]).read_bytes()
        assert len(data) == v["size"], v["id"]
        assert harness.hashlib.sha256(data).hexdigest() == v["sha256"], v["id"]
        if v["expected"] != "valid":
            rule = v["id"].split("_")[1]     # x_<RULE>_<defect>: the rule it breaks first
            assert rule in v["rules"], v["id"]
            assert set(harness.error_classes(v)) <= set(harness.ERROR_CLASSES), v["id"]
        if v["expected"] != "invalid":
            for t in v["tensors"]:
                assert {"name", "dtype", "shape", "sha256"} <= set(t), v["id"]
                assert t["dtype"] in harness.ITEMSIZE, v["id"]


# ================================================================================================
# 2. every MUST of spec/ has a vector
# ================================================================================================
RULE_DEF = re.compile(r"\*\*\[([A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+)\]\*\*")

# spec/README.md: rules whose id starts with `W` bind writers only (a file cannot show that a
# writer wrote it atomically or left the caller's tensors alone); every other rule binds decoders
# and is exercised by at least one vector. Decoder rules a vector cannot exercise go here, each
# with the reason.
NOT_BY_VECTOR = {
    "BND-07": "binds decoders of a band prefix k < N; the decoder contract decodes whole files, so "
              "prefix digests (manifest prefix_sha256) are checked by tests/test_bands_conformance.py",
}
# Rules whose vectors are due from the helper that owns the record kind; listed so that the gap
# is visible. Delete an entry when its vectors are published (a warning says so).
PENDING: dict = {}


def spec_statements(text: str):
    """Paragraphs and list items of a Markdown page (a list item runs until the next item, a
    heading or a blank line)."""
    current: list[str] = []
    for line in text.splitlines():
        starts_item = re.match(r"\s*(?:[-*]|\d+\.)\s", line) or line.startswith("#")
        if not line.strip() or starts_item:
            if current:
                yield " ".join(current)
            current = []
        if line.strip():
            current.append(line.strip())
    if current:
        yield " ".join(current)


def spec_rules() -> dict:
    """{rule id: True when its statement says MUST} over every page of spec/."""
    rules: dict = {}
    for page in sorted(SPEC.rglob("*.md")):
        for statement in spec_statements(page.read_text(encoding="utf-8")):
            for rid in RULE_DEF.findall(statement):
                rules[rid] = rules.get(rid, False) or bool(re.search(r"\bMUST\b", statement))
    return rules


def test_spec_parser_finds_the_rules():
    rules = spec_rules()
    # a few rules whose text is known, so that a parser that finds nothing cannot pass
    for rid in ("HDR-01", "HDR-05", "LAY-03", "REC-04", "LAN-06", "PLN2-01", "BYT-01", "PLN-01"):
        assert rules.get(rid) is True, rid
    assert rules.get("W-WRT-02") is True
    assert len([r for r, must in rules.items() if must]) >= 50


def test_every_decoder_rule_has_a_vector():
    """Every rule that binds decoders (all MUST rules but the writer rules W-*, and the few rule
    ids without the word MUST, e.g. BLK-04 which points at RSV-01) is cited by a vector."""
    rules = spec_rules()
    decoder_rules = {r for r in rules if not r.startswith("W-")}
    covered = {r for v in manifest()["vectors"] for r in v["rules"]}
    unknown = sorted(covered - set(rules))
    assert not unknown, f"vectors cite rules that spec/ does not define: {unknown}"
    stale = sorted(set(NOT_BY_VECTOR) - set(rules)) + sorted(set(PENDING) - set(rules))
    assert not stale, f"allow-list entries for rules spec/ does not define: {stale}"
    now_covered = sorted(set(PENDING) & covered)
    if now_covered:
        warnings.warn(f"PENDING rules now have vectors, delete them from PENDING: {now_covered}")
    missing = sorted(decoder_rules - covered - set(NOT_BY_VECTOR) - set(PENDING))
    assert not missing, ("decoder rules without a conformance vector (add a batch to "
                         f"tools/gen_vectors.py): {missing}")


# ================================================================================================
# 3. the reference and the educational decoder pass every vector
# ================================================================================================
def reference_decoder():
    command = typer.main.get_command(app)

    def wcodec_decode(input_path: str, output_path: str) -> int:
        # the real CLI command (argument parsing, error -> class and exit code), in-process
        return command.main(["decode", "-q", "-f", input_path, "-o", output_path],
                            prog_name="wcodec", standalone_mode=False)
    return wcodec_decode


def test_reference_decoder_passes_every_vector():
    report = run_suite(reference_decoder(), timeout=120, require_class=True)
    assert report["total"] == len(manifest()["vectors"])
    assert report["ok"], failures(report)


def edu_command(path: Path = EDU) -> str:
    return f"{PY} {shlex.quote(str(path))} {{input}} {{output}}"


def test_educational_decoder_passes_every_vector():
    report = run_suite(edu_command(), timeout=120, jobs=2, require_class=True)
    assert report["total"] == len(manifest()["vectors"])
    assert report["ok"], failures(report)


# ================================================================================================
# 4. a decoder that skips any single check fails at least one vector
# ================================================================================================
# (name, line of conformance/edu_decoder.py, its weakened form, the vectors aimed at that check)
WEAKENED = [
    ("magic not checked", "if bytes(buf[:n]) != MAGIC[:n]:", "if False:", ["x_HDR-01_*"]),
    ("header CRC not checked", "if header_crc32c != CRC32C(buf[0:28]):", "if False:",
     ["x_HDR-03_*"]),
    ("any major version", "if version_major != 1:", "if False:", ["x_HDR-04_*"]),
    ("unknown required feature bits ignored", "    if unknown:\n", "    if False:\n",
     ["x_HDR-05_*"]),
    ("alignment_log2 not checked", "if alignment_log2 > MAX_ALIGNMENT_LOG2:", "if False:",
     ["x_HDR-07_*"]),
    ("reserved header bytes ignored", "if any(reserved):", "if False:", ["x_RSV-01_header_*"]),
    ("footer CRC not checked", "if footer_crc32c != CRC32C(buf[start:start + 24]):",
     "if False:", ["x_FTR-02_*"]),
    ("block CRC not checked", "if stored != CRC32C(buf[offset:end]):", "if False:",
     ["x_BLK-01_*", "x_IDX-02_*"]),
    ("unknown required block types ignored",
     "if block_type & REQUIRED_BIT and block_type != CHUNK:", "if False:", ["x_BLK-02_*"]),
    ("trailing bytes after the index allowed", "if r.remaining() != 0:", "if False:",
     ["x_IDX-03_*"]),
    ("trailing bytes after the lanes allowed", "if total != r.remaining():",
     "if total > r.remaining():", ["x_LAN-03_*"]),
    ("non-zero padding allowed", "if any(buf[start:end]):", "if False:", ["x_LAY-03_*"]),
    ("block offsets not checked", "if b.offset != align_up(e, A):", "if False:",
     ["x_LAY-01_*"]),
    ("block header not compared with the table",
     "if h.block_type != b.block_type or h.payload_length != b.payload_length:", "if False:",
     ["x_LAY-05_*"]),
    ("chunk block ids not checked", "if (h.tensor_id, h.stream_id, h.chunk_id) != (t, s, c):",
     "if False:", ["x_REC-08_*"]),
    ("shape overflow not checked",
     "    if elements * itemsize > MAX_TENSOR_BYTES:\n        raise",
     "    if False:\n        raise", ["x_REC-04_*"]),
    ("counts and lengths not checked against the limits", "if value > maximum:", "if False:",
     ["x_IDX-04_*", "x_LIM-02_*", "x_REC-05_*"]),
    ("chunk_count not checked", "if chunk_count != expected:", "if False:", ["x_REC-06_*"]),
    ("duplicate tensor names allowed", "if rec.name in names:", "if False:",
     ["x_REC-01_duplicate_name"]),
    ("invalid UTF-8 replaced, not rejected", 'bytes(raw).decode("utf-8")',
     'bytes(raw).decode("utf-8", "replace")', ["x_STR-01_*", "x_META-01_*utf8"]),
    ("SHA-256 not verified", "and hashlib.sha256(data).digest() != rec.sha256:", "and False:",
     ["x_REC-09_*"]),
    ("reserved record_flags ignored", "if record_flags & ~(HAS_SHA256 | LOSSY | HAS_CHUNK_CRC32C):",
     "if False:", ["x_REC-10_*"]),
    ("chunk CRC32C not verified",
     "if stream.chunk_crc32c is not None and CRC32C(data) != stream.chunk_crc32c[c]:",
     "if False:", ["x_REC-11_*"]),
    ("raw lane length not checked", "            if coded_length != D:", "            if False:",
     ["x_LAN-05_raw_length"]),
    ("planes input length not checked", "if len(data) != L:                      "
     "                                     # [PLN2-01]", "if False:", ["x_PLN2-01_*"]),
    ("plain record shape not checked", "if len(rec.params) != 0:", "if False:",
     ["x_PLN-01_params"]),
    ("reference cycles not detected", 'if (id(nf), p["ref"]) in seen:', "if False:",
     ["x_PRD-08_*"]),
    ("reference chains unbounded", "if len(chain) > PRD_MAX_DEPTH:", "if False:",
     ["x_PRD-09_*"]),
    ("rans_split symbol padding not checked", "if G and D % n and sym[-1] >> (k * (D - (G - 1) * n)):",
     "if False:", ["x_RSP-03_last_symbol_bits"]),
    ("rans_split low_bits padding not checked",
     "if (D * (8 - k)) % 8 and low[B - 1] >> ((D * (8 - k)) % 8):", "if False:",
     ["x_RSP-03_low_padding"]),
]


@pytest.mark.parametrize("name,old,new,patterns", WEAKENED, ids=[w[0] for w in WEAKENED])
def test_weakened_decoder_fails(tmp_path, name, old, new, patterns):
    source = EDU.read_text(encoding="utf-8")
    assert source.count(old) == 1, f"the patch for '{name}' no longer applies to edu_decoder.py"
    weak = tmp_path / "weak_decoder.py"
    weak.write_text(source.replace(old, new), encoding="utf-8")
    assert weak.read_text(encoding="utf-8") != source
    # require_class: a weakened decoder that merely crashes on the file (a KeyError, a
    # MemoryError) does not count as rejecting it; the intact decoder names every class.
    report = run_suite(edu_command(weak), patterns=patterns, timeout=60, jobs=2,
                               require_class=True)
    assert report["total"] >= 1
    assert report["failed"] >= 1, f"a decoder with '{name}' still passes {patterns}"


# ================================================================================================
# 5. the harness itself
# ================================================================================================
SAMPLE = ["v_base", "x_HDR-01_magic_byte0", "x_HDR-03_header_crc"]


def script(tmp_path: Path, name: str, body: str) -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(body), encoding="utf-8")
    return f"{PY} {shlex.quote(str(p))} {{input}} {{output}}"


def verdicts(report: dict) -> dict:
    return {r["id"]: (r["passed"], r["outcome"]) for r in report["vectors"]}


def test_harness_fails_a_decoder_that_accepts_everything(tmp_path):
    cmd = script(tmp_path, "yes.py", "import sys\nsys.exit(0)\n")
    report = run_suite(cmd, patterns=SAMPLE, timeout=30)
    assert report["total"] == 3 and report["failed"] == 3 and not report["ok"]
    assert "no output file" in {r["id"]: r["reason"] for r in report["vectors"]}["v_base"]


def test_harness_fails_a_decoder_that_rejects_everything(tmp_path):
    cmd = script(tmp_path, "no.py", "import sys\nprint('BadMagic: no', file=sys.stderr)\n"
                                    "sys.exit(1)\n")
    report = run_suite(cmd, patterns=SAMPLE, timeout=30)
    assert verdicts(report) == {"v_base": (False, "rejected"),
                                "x_HDR-01_magic_byte0": (True, "rejected"),
                                "x_HDR-03_header_crc": (False, "rejected")}   # wrong class


def test_harness_require_class(tmp_path):
    cmd = script(tmp_path, "mute.py", "import sys\nsys.exit(3)\n")
    lax = run_suite(cmd, patterns=SAMPLE[1:], timeout=30)
    strict = run_suite(cmd, patterns=SAMPLE[1:], timeout=30, require_class=True)
    assert lax["ok"] and strict["failed"] == 2


def test_harness_fails_wrong_output(tmp_path):
    # writes a well-formed safetensors file with the right names but one flipped bit
    body = f"""
        import subprocess, sys
        rc = subprocess.call([{sys.executable!r}, {str(EDU)!r}, sys.argv[1], sys.argv[2]])
        if rc == 0:
            data = bytearray(open(sys.argv[2], 'rb').read())
            data[-1] ^= 1
            open(sys.argv[2], 'wb').write(data)
        sys.exit(rc)
        """
    report = run_suite(script(tmp_path, "flip.py", body), patterns=["v_base"], timeout=60)
    assert report["failed"] == 1 and "decoded bytes differ" in report["vectors"][0]["reason"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_harness_kills_a_hanging_decoder(tmp_path):
    pids = tmp_path / "pids"
    body = f"""
        import os, subprocess, sys, time
        child = subprocess.Popen(["sleep", "120"])        # a grandchild must die too
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(120)
        """
    t0 = time.monotonic()
    report = run_suite(script(tmp_path, "hang.py", body), patterns=["v_base"],
                               timeout=2)
    assert time.monotonic() - t0 < 30
    row = report["vectors"][0]
    assert not report["ok"] and row["outcome"] == "timeout" and "2 s" in row["reason"]
    time.sleep(0.2)
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid), f"process {pid} of the hanging decoder still runs"


def test_cli_exit_codes_and_json(tmp_path):
    command = typer.main.get_command(app)
    no = script(tmp_path, "no.py", "import sys\nsys.exit(1)\n")
    assert command.main(["conformance", "run", "--decoder", no, "-k", "v_base", "--json"],
                        prog_name="wcodec", standalone_mode=False) == harness.EXIT_FAILURES
    assert command.main(["conformance", "run", "--decoder", no, "-k", "x_HDR-01_magic_byte0"],
                        prog_name="wcodec", standalone_mode=False) == 0
    assert command.main(["conformance", "run", "--decoder", "no placeholders"],
                        prog_name="wcodec", standalone_mode=False) == harness.EXIT_USAGE


def test_coverage_table_counts_every_vector():
    m = manifest()
    text = harness.coverage_markdown(m["vectors"])
    assert f"| all | {len(m['vectors'])} |" in text
    assert "| rule | vectors |" in text and "| HDR-03 |" in text


def test_standalone_runner_needs_no_wcodec(tmp_path):
    # conformance/run_conformance.py: the harness without the wcodec package
    code = ("import runpy, sys; sys.modules['wcodec'] = None; "
            f"sys.argv = ['run_conformance.py', 'run', '--json', '-k', 'v_base', '-k', "
            f"'x_HDR-03_*', '--decoder', {edu_command()!r}]; "
            f"runpy.run_path({str(CONF / 'run_conformance.py')!r}, run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120, env=dict(os.environ, PYTHONPATH=""))
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads(p.stdout)
    assert report["ok"] and report["total"] == 3
