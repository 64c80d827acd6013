"""`wcodec conformance ...`: runs the conformance suite against any decoder (conformance/README.md).

The decoder contract: the harness runs `DECODER` (a command template holding `{input}` and
`{output}`) once per vector, with a time limit. For a valid file the decoder exits 0 and writes
every tensor of the file to `{output}` as safetensors; for an invalid file it exits non-zero and
writes nothing, optionally naming the error class of spec/container.md §11 on stderr (the first
class named must then be the expected one). Each vector is judged against conformance/manifest.json:
exactly the expected tensor names, dtypes, shapes and SHA-256 of bytes.

`run_suite` is also usable in-process with a Python callable decoder (the tests do that).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import typer

MANIFEST_SCHEMA = "wcodec.conformance.manifest/1"
REPORT_SCHEMA = "wcodec.conformance.report/1"
ERROR_CLASSES = ("BadMagic", "UnsupportedVersion", "UnsupportedFeature", "Truncated",
                 "ChecksumMismatch", "LayoutError", "MalformedRecord", "LimitExceeded",
                 "CorruptPayload", "DigestMismatch", "UnresolvedReference")
# the default list; a manifest's own `error_classes` (the spec's §11 table at its version) wins
# safetensors dtype strings -> spec dtype names (spec/container.md §7.1)
SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I8": "int8", "I16": "int16",
    "I32": "int32", "I64": "int64", "U8": "uint8", "U16": "uint16", "U32": "uint32",
    "U64": "uint64", "BOOL": "bool",
}
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1,
            "float8_e5m2": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1,
            "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1}
DEFAULT_TIMEOUT = 30.0
EXIT_FAILURES = 5
EXIT_USAGE = 2
STDERR_KEEP = 4000


class HarnessError(Exception):
    """A problem with the suite or the call (exit 2), not with the decoder."""


def conformance_dir() -> Path:
    """The repository's conformance/ folder (codec/wcodec/../../conformance), or
    $WCODEC_CONFORMANCE_DIR."""
    env = os.environ.get("WCODEC_CONFORMANCE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "conformance"


def default_paths(manifest: Optional[Path], vectors: Optional[Path]) -> tuple[Path, Path]:
    manifest = manifest or conformance_dir() / "manifest.json"
    vectors = vectors or manifest.parent / "vectors"
    return manifest, vectors


# -- the manifest -----------------------------------------------------------------------------------
def load_manifest(path: Path) -> dict:
    try:
        m = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarnessError(f"no manifest at {path} (use --manifest)") from None
    except (OSError, ValueError) as e:
        raise HarnessError(f"cannot read manifest {path}: {e}") from None
    if not isinstance(m, dict) or m.get("schema") != MANIFEST_SCHEMA:
        raise HarnessError(f"{path}: not a manifest of schema {MANIFEST_SCHEMA}")
    vectors = m.get("vectors")
    if not isinstance(vectors, list):
        raise HarnessError(f"{path}: no vector list")
    for v in vectors:
        if not isinstance(v, dict) or not {"id", "file", "expected"} <= set(v):
            raise HarnessError(f"{path}: malformed vector entry {v!r:.100}")
        if v["expected"] not in ("valid", "invalid", "acceptable"):
            raise HarnessError(f"{path}: vector {v['id']}: unknown expectation {v['expected']!r}")
        if v["expected"] != "valid" and v.get("error_class") not in manifest_classes(m):
            raise HarnessError(f"{path}: vector {v['id']}: no error class")
        if v["expected"] != "invalid" and not isinstance(v.get("tensors"), list):
            raise HarnessError(f"{path}: vector {v['id']}: no expected tensors")
    return m


def error_classes(entry: dict) -> list[str]:
    return list(entry.get("error_classes") or [entry["error_class"]])


def select(manifest: dict, patterns: Optional[List[str]]) -> list[dict]:
    vs = manifest["vectors"]
    if patterns:
        vs = [v for v in vs if any(fnmatch.fnmatchcase(v["id"], p) for p in patterns)]
    return vs


# -- decoders ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    returncode: Optional[int]   # None: timed out
    stderr: str
    seconds: float


def command_argv(template: str, input_path: str, output_path: str) -> list[str]:
    """Split the template like a POSIX shell, then put the paths into the tokens (so paths with
    spaces stay one argument)."""
    try:
        tokens = shlex.split(template)
    except ValueError as e:
        raise HarnessError(f"cannot parse the decoder command: {e}") from None
    return [t.replace("{input}", input_path).replace("{output}", output_path) for t in tokens]


def check_template(template: str) -> None:
    if "{input}" not in template or "{output}" not in template:
        raise HarnessError("the decoder command must contain {input} and {output}, e.g. "
                           "--decoder 'python my_decoder.py {input} {output}'")
    if not command_argv(template, "x", "y"):
        raise HarnessError("the decoder command is empty")


class CommandDecoder:
    """Runs a command per vector, in its own process group, killed at the time limit."""

    def __init__(self, template: str):
        check_template(template)
        self.template = template

    def __call__(self, input_path: str, output_path: str, timeout: float) -> Outcome:
        argv = command_argv(self.template, input_path, output_path)
        t0 = time.monotonic()
        kw = {"start_new_session": True} if os.name == "posix" else {}
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, **kw)
        except OSError as e:
            return Outcome(127, f"cannot start the decoder: {e}", time.monotonic() - t0)
        try:
            _, err = proc.communicate(timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            _kill(proc)
            _, err = proc.communicate()
            rc = None
        return Outcome(rc, err.decode("utf-8", "replace")[:STDERR_KEEP], time.monotonic() - t0)


def _kill(proc: subprocess.Popen) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


class CallableDecoder:
    """An in-process decoder: fn(input, output) -> exit code; what it writes to sys.stderr is
    captured. Runs one vector at a time (stderr capture is process-wide); a call that overruns
    the time limit is reported as timed out (the thread cannot be killed)."""

    serial = True

    def __init__(self, fn: Callable[[str, str], int]):
        self.fn = fn

    def __call__(self, input_path: str, output_path: str, timeout: float) -> Outcome:
        box: dict = {}

        def target():
            buf = io.StringIO()
            try:
                with contextlib.redirect_stderr(buf):
                    box["rc"] = int(self.fn(input_path, output_path) or 0)
            except SystemExit as e:
                box["rc"] = e.code if isinstance(e.code, int) else 1
            except BaseException as e:  # a crash of the decoder is an answer too
                box["rc"] = 1
                buf.write(f"\ncrash: {type(e).__name__}: {e}")
            box["err"] = buf.getvalue()

        t0 = time.monotonic()
        th = threading.Thread(target=target, daemon=True)
        th.start()
        th.join(timeout)
        if th.is_alive():
            return Outcome(None, "", time.monotonic() - t0)
        return Outcome(box.get("rc", 1), box.get("err", "")[:STDERR_KEEP],
                       time.monotonic() - t0)


# -- judging ----------------------------------------------------------------------------------------
def parse_safetensors(path: Path) -> dict:
    """{name: (dtype, shape, sha256 hex)} of a safetensors file; ValueError when it is not one."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError("shorter than 8 bytes")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError(f"header length {n} runs past the end of the file")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"header is not UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    body = memoryview(data)[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(e, dict):
            raise ValueError(f"entry {name!r} is not an object")
        dtype = SAFETENSORS_DTYPES.get(e.get("dtype"))
        shape, offs = e.get("shape"), e.get("data_offsets")
        if dtype is None:
            raise ValueError(f"tensor {name!r}: unknown dtype {e.get('dtype')!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ValueError(f"tensor {name!r}: bad shape {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
                and 0 <= offs[0] <= offs[1] <= len(body)):
            raise ValueError(f"tensor {name!r}: bad data_offsets {offs!r}")
        count = 1
        for d in shape:
            count *= d
        if offs[1] - offs[0] != count * ITEMSIZE[dtype]:
            raise ValueError(f"tensor {name!r}: {offs[1] - offs[0]} bytes for shape {shape} of "
                             f"{dtype}")
        out[name] = (dtype, shape, hashlib.sha256(body[offs[0]:offs[1]]).hexdigest())
    return out


def compare_tensors(expected: list[dict], got: dict) -> list[str]:
    problems = []
    want = {t["name"]: t for t in expected}
    for name in want:
        if name not in got:
            problems.append(f"missing tensor {name!r}")
    for name in got:
        if name not in want:
            problems.append(f"unexpected tensor {name!r}")
    for name, t in want.items():
        if name not in got:
            continue
        dtype, shape, digest = got[name]
        if dtype != t["dtype"]:
            problems.append(f"{name!r}: dtype {dtype}, expected {t['dtype']}")
        elif list(shape) != list(t["shape"]):
            problems.append(f"{name!r}: shape {shape}, expected {t['shape']}")
        elif digest != t["sha256"]:
            problems.append(f"{name!r}: decoded bytes differ (SHA-256 {digest[:16]}..., expected "
                            f"{t['sha256'][:16]}...)")
    return problems


def manifest_classes(manifest: dict) -> tuple:
    """The error class names a manifest declares (its `error_classes`), else ERROR_CLASSES."""
    classes = manifest.get("error_classes", list(ERROR_CLASSES))
    if not isinstance(classes, list) or not classes or not all(
            isinstance(c, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", c) for c in classes):
        raise HarnessError("manifest: error_classes must be a list of class names")
    return tuple(classes)


@functools.lru_cache(maxsize=8)
def _class_re(classes: tuple) -> "re.Pattern":
    return re.compile(r"\b(" + "|".join(classes) + r")\b")


def first_class(stderr: str, classes: tuple = ERROR_CLASSES) -> Optional[str]:
    m = _class_re(tuple(classes)).search(stderr or "")
    return m.group(1) if m else None


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""


def judge(entry: dict, outcome: Outcome, output: Path, timeout: float,
          require_class: bool = False, classes: tuple = ERROR_CLASSES) -> dict:
    """One vector's verdict: {"passed", "outcome", "reason", "named_class"}. With
    `require_class`, a rejection passes only when stderr names an allowed error class (a decoder
    that merely crashes on a bad file does not pass)."""
    named = first_class(outcome.stderr, classes)
    res = {"exit_code": outcome.returncode, "named_class": named,
           "seconds": round(outcome.seconds, 3)}
    if outcome.returncode is None:
        return dict(res, passed=False, outcome="timeout", reason=f"no answer within {timeout:g} s")
    if outcome.returncode < 0:
        return dict(res, passed=False, outcome="crashed",
                    reason=f"killed by signal {-outcome.returncode}")
    expected = entry["expected"]
    if outcome.returncode == 0:
        if expected == "invalid":
            return dict(res, passed=False, outcome="accepted",
                        reason=f"accepted an invalid file (expected {entry['error_class']})")
        if not output.exists():
            return dict(res, passed=False, outcome="accepted",
                        reason="exit 0 but no output file was written")
        try:
            got = parse_safetensors(output)
        except (OSError, ValueError) as e:
            return dict(res, passed=False, outcome="accepted",
                        reason=f"output is not valid safetensors: {e}")
        problems = compare_tensors(entry["tensors"], got)
        if problems:
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            return dict(res, passed=False, outcome="accepted",
                        reason="; ".join(problems[:3]) + more)
        return dict(res, passed=True, outcome="accepted", reason="")
    # non-zero exit: a rejection
    if expected == "valid":
        return dict(res, passed=False, outcome="rejected",
                    reason=f"rejected a valid file (exit {outcome.returncode}): "
                           f"{_first_line(outcome.stderr)}")
    allowed = error_classes(entry)
    if named is not None and named not in allowed:
        return dict(res, passed=False, outcome="rejected",
                    reason=f"reported {named}, expected {' or '.join(allowed)}: "
                           f"{_first_line(outcome.stderr)}")
    if named is None and require_class:
        return dict(res, passed=False, outcome="rejected",
                    reason=f"no error class named on stderr (expected {' or '.join(allowed)}): "
                           f"{_first_line(outcome.stderr)}")
    return dict(res, passed=True, outcome="rejected",
                reason="" if named else "no error class named on stderr")


def _file_ok(entry: dict, path: Path) -> Optional[str]:
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"cannot read the vector: {e}"
    if "sha256" in entry and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        return "the vector file differs from the manifest (damaged checkout?)"
    return None


# -- running ----------------------------------------------------------------------------------------
def run_suite(decoder, *, manifest_path: Optional[Path] = None,
              vectors_dir: Optional[Path] = None, patterns: Optional[List[str]] = None,
              timeout: float = DEFAULT_TIMEOUT, jobs: int = 1, progress=None,
              decoder_label: Optional[str] = None, require_class: bool = False) -> dict:
    """Run `decoder` (a CommandDecoder, a CallableDecoder, a command template or a callable)
    over the selected vectors; returns the report (schema wcodec.conformance.report/1).
    `require_class`: rejections must name an allowed error class on stderr (see judge)."""
    if isinstance(decoder, str):
        decoder_label = decoder_label or decoder
        decoder = CommandDecoder(decoder)
    elif not isinstance(decoder, (CommandDecoder, CallableDecoder)):
        decoder_label = decoder_label or getattr(decoder, "__name__", repr(decoder))
        decoder = CallableDecoder(decoder)
    if timeout <= 0:
        raise HarnessError("--timeout must be positive")
    manifest_path, vectors_dir = default_paths(manifest_path, vectors_dir)
    manifest = load_manifest(manifest_path)
    entries = select(manifest, patterns)
    if not entries:
        raise HarnessError(f"no vector matches {patterns}")
    workdir = Path(tempfile.mkdtemp(prefix="wcodec-conformance-"))

    def one(entry: dict) -> dict:
        src = vectors_dir / entry["file"]
        row = {"id": entry["id"], "expected": entry["expected"],
               "error_class": entry.get("error_class"), "features": entry.get("features", []),
               "rules": entry.get("rules", [])}
        bad = _file_ok(entry, src)
        if bad:
            row.update(passed=False, outcome="not run", reason=bad, exit_code=None,
                       named_class=None, seconds=0.0)
        else:
            d = workdir / entry["id"]
            d.mkdir()
            out = d / "out.safetensors"
            outcome = decoder(str(src.resolve()), str(out), timeout)
            row.update(judge(entry, outcome, out, timeout, require_class,
                             manifest_classes(manifest)))
            row["stderr"] = _first_line(outcome.stderr)
            shutil.rmtree(d, ignore_errors=True)
        if progress:
            progress(row)
        return row

    t0 = time.monotonic()
    try:
        if getattr(decoder, "serial", False) or jobs <= 1:
            rows = [one(e) for e in entries]
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                rows = list(pool.map(one, entries))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = make_report(rows, manifest, manifest_path, vectors_dir,
                         decoder_label or getattr(decoder, "template", "?"), timeout,
                         time.monotonic() - t0)
    report["require_class"] = require_class
    return report


def _summary(rows: list[dict], key: str) -> dict:
    out: dict = {}
    for r in rows:
        for k in r[key]:
            s = out.setdefault(k, {"total": 0, "passed": 0, "failed": 0})
            s["total"] += 1
            s["passed" if r["passed"] else "failed"] += 1
    return dict(sorted(out.items()))


def make_report(rows, manifest, manifest_path, vectors_dir, decoder, timeout, seconds) -> dict:
    passed = sum(r["passed"] for r in rows)
    return {
        "schema": REPORT_SCHEMA,
        "manifest": str(manifest_path),
        "manifest_schema": manifest.get("schema"),
        "format_version": manifest.get("format_version"),
        "vectors_dir": str(vectors_dir),
        "decoder": decoder,
        "timeout_seconds": timeout,
        "seconds": round(seconds, 3),
        "ok": passed == len(rows),
        "total": len(rows),
        "passed": passed,
        "failed": len(rows) - passed,
        "by_expectation": _summary([dict(r, x=[r["expected"]]) for r in rows], "x"),
        "by_feature": _summary(rows, "features"),
        "by_rule": _summary(rows, "rules"),
        "vectors": rows,
    }


# -- rendering --------------------------------------------------------------------------------------
def render_report(report: dict, *, failures_only: bool = False, file=None) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console(file=file or sys.stdout, width=max(100, shutil.get_terminal_size().columns))
    t = Table(title=f"conformance: {report['decoder']}", show_lines=False)
    t.add_column("vector", overflow="fold")
    t.add_column("expected")
    t.add_column("result")
    t.add_column("decoder did")
    t.add_column("detail", overflow="fold")
    for r in report["vectors"]:
        if failures_only and r["passed"]:
            continue
        exp = r["expected"] + (f" ({r['error_class']})" if r["error_class"] else "")
        did = r["outcome"] + (f" {r['named_class']}" if r.get("named_class") else "")
        res = "[green]PASS[/]" if r["passed"] else "[red]FAIL[/]"
        t.add_row(r["id"], exp, res, did, r["reason"])
    if t.row_count:
        console.print(t)
    f = Table(title="by feature")
    f.add_column("feature")
    f.add_column("passed", justify="right")
    f.add_column("failed", justify="right")
    for k, s in report["by_feature"].items():
        f.add_row(k, f"{s['passed']}/{s['total']}",
                  f"[red]{s['failed']}[/]" if s["failed"] else "0")
    console.print(f)
    verdict = "[green]all vectors pass[/]" if report["ok"] else \
        f"[red]{report['failed']} of {report['total']} vectors fail[/]"
    console.print(f"{report['passed']}/{report['total']} passed in {report['seconds']:.1f} s: "
                  f"{verdict}")


def coverage_markdown(entries: list[dict]) -> str:
    """Markdown tables of how many vectors there are per expectation, per feature and per rule
    (`wcodec conformance list --coverage`; conformance/README.md quotes its output)."""
    kinds = ("valid", "invalid", "acceptable")

    def table(title: str, key) -> list[str]:
        counts: dict = {}
        for e in entries:
            for k in key(e):
                counts.setdefault(k, dict.fromkeys(kinds, 0))[e["expected"]] += 1
        lines = [f"| {title} | vectors | valid | invalid | acceptable |", "|---|---|---|---|---|"]
        for k, c in sorted(counts.items()):
            lines.append(f"| {k} | {sum(c.values())} | " + " | ".join(str(c[x]) for x in kinds)
                         + " |")
        return lines

    total = dict.fromkeys(kinds, 0)
    for e in entries:
        total[e["expected"]] += 1
    out = ["| expectation | vectors |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in total.items()] + [f"| all | {len(entries)} |", ""]
    out += table("feature", lambda e: e.get("features", [])) + [""]
    out += table("rule", lambda e: e.get("rules", []))
    return "\n".join(out) + "\n"


# -- CLI ----------------------------------------------------------------------------------------------
conformance_app = typer.Typer(no_args_is_help=True,
                              help="Run the conformance suite against any decoder.")


def _usage(message: str) -> None:
    typer.echo(f"wcodec: error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


@conformance_app.command("run")
def run(
    decoder: str = typer.Option(..., "--decoder",
                                help="Command with {input} and {output}, e.g. "
                                     "\"python my_decoder.py {input} {output}\"."),
    vectors: Optional[Path] = typer.Option(None, "--vectors",
                                           help="Folder of the vectors (default: next to the "
                                                "manifest)."),
    manifest: Optional[Path] = typer.Option(None, "--manifest",
                                            help="Manifest (default: the repository's "
                                                 "conformance/manifest.json)."),
    filter_: Optional[List[str]] = typer.Option(None, "--filter", "-k",
                                                help="Only vectors whose id matches this glob "
                                                     "(repeatable)."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout",
                                  help="Seconds allowed per vector."),
    jobs: int = typer.Option(min(4, os.cpu_count() or 1), "--jobs", "-j",
                             help="Vectors run in parallel."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON (schema "
                                                        f"{REPORT_SCHEMA})."),
    failures_only: bool = typer.Option(False, "--failures-only",
                                       help="List only the failing vectors in the table."),
    require_class: bool = typer.Option(False, "--require-class",
                                       help="A rejection passes only if stderr names an allowed "
                                            "error class (by default naming one is optional)."),
):
    """Run every vector through DECODER and report per vector and per feature.

    Exit 0 when every vector passes, 5 when any fails, 2 for a usage error."""
    if jobs < 1:
        _usage("--jobs must be at least 1")
    try:
        report = run_suite(decoder, manifest_path=manifest, vectors_dir=vectors,
                           patterns=filter_, timeout=timeout, jobs=jobs,
                           require_class=require_class)
    except HarnessError as e:
        _usage(str(e))
    if json_out:
        typer.echo(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        render_report(report, failures_only=failures_only)
    raise typer.Exit(0 if report["ok"] else EXIT_FAILURES)


@conformance_app.command("list")
def list_(
    vectors: Optional[Path] = typer.Option(None, "--vectors", help="Folder of the vectors."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Manifest path."),
    filter_: Optional[List[str]] = typer.Option(None, "--filter", "-k",
                                                help="Only vectors whose id matches this glob."),
    json_out: bool = typer.Option(False, "--json", help="Print the selected manifest entries "
                                                        "as JSON."),
    coverage: bool = typer.Option(False, "--coverage",
                                  help="Print Markdown tables: vectors per expectation, feature "
                                       "and rule."),
):
    """List the vectors: id, expectation, error class, rules, features."""
    try:
        manifest_path, vectors_dir = default_paths(manifest, vectors)
        m = load_manifest(manifest_path)
        entries = select(m, filter_)
    except HarnessError as e:
        _usage(str(e))
    if coverage:
        typer.echo(coverage_markdown(entries), nl=False)
        return
    if json_out:
        typer.echo(json.dumps({"schema": m["schema"], "format_version": m.get("format_version"),
                               "manifest": str(manifest_path), "vectors_dir": str(vectors_dir),
                               "vectors": entries}, indent=1, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"{len(entries)} vectors ({manifest_path})")
    for c in ("vector", "expected", "error class", "rules", "features"):
        t.add_column(c, overflow="fold")
    for e in entries:
        t.add_row(e["id"], e["expected"], e.get("error_class") or "",
                  " ".join(e.get("rules", [])), " ".join(e.get("features", [])))
    Console(width=max(100, shutil.get_terminal_size().columns)).print(t)
