"""The `wcodec` command line. Data goes to stdout, messages and progress to stderr; exit codes are
those of spec/container.md §11."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__
from .cli_util import EXIT_IO, EXIT_USAGE, errors_to_exit, fail, progress_bar, show_progress
from .limits import Limits
from .writer import DEFAULT_CHUNK_ELEMENTS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Encode, decode, inspect and verify wcodec files of neural-network weights.")


def _version(value: bool):
    if value:
        typer.echo(f"wcodec {__version__} (format 1.0)")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    pass


def _limits(max_tensor_bytes: Optional[int], max_index_bytes: Optional[int],
            more: Optional[List[str]] = None) -> Limits:
    kw = {}
    if max_tensor_bytes is not None:
        kw["max_tensor_bytes"] = max_tensor_bytes
    if max_index_bytes is not None:
        kw["max_index_bytes"] = max_index_bytes
    for item in more or []:  # --limit NAME=VALUE: any field of wcodec.Limits (spec §10)
        key, _, value = item.partition("=")
        try:
            kw["max_" + key.strip().replace("-", "_").removeprefix("max_")] = int(value, 0)
        except ValueError:
            fail(f"--limit {item!r}: expected NAME=INTEGER", EXIT_USAGE)
    try:
        return Limits.coerce(kw)
    except (ValueError, TypeError) as e:
        fail(str(e), EXIT_USAGE)


def _check_target(path: Path, force: bool) -> None:
    if path.exists() and not force:
        fail(f"{path} exists (use --force to replace it)", EXIT_USAGE)


@app.command()
def encode(
    input: Path = typer.Argument(..., help="A .safetensors, .pt/.pth/.bin file, or a model folder."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Target file (or folder for a folder input)."),
    chunk_elements: int = typer.Option(DEFAULT_CHUNK_ELEMENTS,
                                        help="Elements per independently coded chunk."),
    level: int = typer.Option(3, help="zstd level used inside the lanes codec."),
    codec: str = typer.Option("planes", help="'planes' (byte planes + entropy coding) or 'raw'."),
    threads: Optional[int] = typer.Option(None, help="Worker threads (default: all cores)."),
    alignment_log2: int = typer.Option(6, help="Blocks start at multiples of 2**N bytes (0-16)."),
    no_sha256: bool = typer.Option(False, "--no-sha256", help="Do not store SHA-256 digests."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, no summary."),
    bands: Optional[int] = typer.Option(None, "--bands", help="Store float tensors as band "
                                        "records of N bands (2-8): decoding the first k gives a "
                                        "coarser model, all of them the exact one."),
    band1_bits: Optional[float] = typer.Option(None, "--band1-bits", help="With --bands: band 1's "
                                               "bits per weight over the model (default 4)."),
    band1_snr: Optional[float] = typer.Option(None, "--band1-snr", help="With --bands: band 1's "
                                              "SNR in dB, per tensor (instead of --band1-bits)."),
    band1_step: Optional[float] = typer.Option(None, "--band1-step", help="With --bands: band 1's "
                                               "quantization step (instead of --band1-bits)."),
    band_bits: int = typer.Option(4, "--band-bits", help="With --bands: bits each refinement "
                                  "band adds (1-24)."),
    band_scales: str = typer.Option("tensor", "--band-scales", help="With --bands: band 1's "
                                    "scales: tensor, channel or group:G."),
    band_quantizer: str = typer.Option("dependent", "--band-quantizer", help="With --bands: band "
                                       "1's quantizer, dependent (trellis) or uniform."),
    lossy_bands: bool = typer.Option(False, "--lossy-bands", help="With --bands: no exact "
                                     "remainder band; the last band is quantized too."),
    bits_per_weight: Optional[float] = typer.Option(None, "--bits-per-weight", help="Lossy: at "
                                                    "most B bits per float weight (file size), "
                                                    "least error (docs/lossy.md)."),
    target_snr: Optional[float] = typer.Option(None, "--target-snr", help="Lossy: the model's "
                                               "SNR at least D dB, fewest bits."),
    max_rel_error: Optional[float] = typer.Option(None, "--max-rel-error", help="Lossy: every "
                                                  "float tensor's ||x - y|| / ||x|| at most E."),
    predict_layers: bool = typer.Option(False, "--predict-layers", help="Lossless: predict each "
                                        "layer from the one before (FFN units aligned), per "
                                        "tensor only where that stores fewer bytes."),
):
    """Encode weights into the wcodec format: lossless by default, lossy with a rate target, progressive with --bands."""
    from . import formats
    from .writer import EncodeOptions
    with errors_to_exit():
        opts = EncodeOptions(chunk_elements=chunk_elements, level=level, codec=codec,
                             threads=threads, alignment_log2=alignment_log2, sha256=not no_sha256)
        if not input.exists():
            fail(f"no such file or folder: {input}", EXIT_IO)
        if input.is_dir():
            out = output or input.with_name(input.name + ".wcodec")
            plan = formats.plan_folder_encode(input, out)
            out.mkdir(parents=True, exist_ok=True)
            jobs = plan
        else:
            formats.source_format(input)
            out = output or input.with_suffix(formats.SUFFIX)
            jobs = [(input, out, True)]
        for _, target, _ in jobs:
            _check_target(target, force)
        total = sum(src.stat().st_size for src, _, enc in jobs if enc)
        band_cfg = None
        if bands is not None:
            from .bandplan import BandConfig, encode_file_bands
            band_cfg = BandConfig(bands=bands, band1_bits=band1_bits, band1_snr=band1_snr,
                                  band1_step=band1_step, refine_bits=band_bits,
                                  quantizer=band_quantizer, scales=band_scales,
                                  lossless=not lossy_bands)
        from .cli_lossy import encode_file_lossy, summary, target_from_options
        lossy = target_from_options(bits_per_weight, target_snr, max_rel_error)
        if predict_layers and (lossy is not None or bands is not None):
            fail("--predict-layers is lossless: not with --bands or a lossy target", EXIT_USAGE)
        if lossy is not None:
            if bands is not None:
                fail("--bands and a lossy target (--bits-per-weight, --target-snr, "
                     "--max-rel-error) cannot be combined", EXIT_USAGE)
            for src, target, enc in jobs:
                if enc:
                    rep = encode_file_lossy(src, target, opts, lossy)
                    if not quiet:
                        typer.echo(summary(rep), err=True)
                else:
                    formats.copy_file(src, target)
            return
        with progress_bar(show_progress(quiet), total, "encoding") as advance:
            results = []
            for src, target, enc in jobs:
                if enc and predict_layers:
                    from .layer_predict import encode_file_layers
                    results.append(encode_file_layers(src, target, opts, progress=advance))
                elif enc:
                    results.append(formats.encode_file(src, target, opts, progress=advance)
                                   if band_cfg is None else encode_file_bands(
                                       src, target, opts, band_cfg, progress=advance))
                else:
                    formats.copy_file(src, target)
        if not quiet:
            for r in results:
                before, after = Path(r["source"]).stat().st_size, Path(r["output"]).stat().st_size
                typer.echo(f"{r['source']} -> {r['output']}: {r['tensors']} tensors, "
                           f"{before:,} -> {after:,} bytes ({100 * after / max(before, 1):.2f} %)",
                           err=True)


@app.command()
def decode(
    input: Path = typer.Argument(..., help="A .wcodec file or a folder of them."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Target .safetensors file (or folder)."),
    tensor: Optional[List[str]] = typer.Option(None, "--tensor", "-t",
                                               help="Only tensors matching this name or glob "
                                                    "pattern (repeatable)."),
    verify_sha256: Optional[bool] = typer.Option(
        None, "--verify-sha256/--no-verify-sha256",
        help="Check (or skip) every tensor's SHA-256. Default: a lossless (plain) tensor "
             "with per-chunk CRC32Cs of its decoded bytes is checked by those (spec REC-11), "
             "every other tensor by its SHA-256."),
    max_tensor_bytes: Optional[int] = typer.Option(None, help="Reject tensors larger than this."),
    max_index_bytes: Optional[int] = typer.Option(None, help="Reject indexes larger than this."),
    limit: Optional[List[str]] = typer.Option(None, "--limit", help="Any other decoder limit of "
                                              "spec §10 as NAME=N (repeatable): tensors, blocks, "
                                              "metadata-entries, metadata-value-bytes."),
    threads: Optional[int] = typer.Option(None, help="Worker threads (default: all cores)."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, no summary."),
    bands: Optional[int] = typer.Option(None, "--bands", help="Decode only the first k bands of "
                                        "band records (a coarser model; others decode fully)."),
    salvage: bool = typer.Option(False, "--salvage", help="Recover every intact tensor of a "
                                 "damaged file, list the lost ones on stderr, exit with the first "
                                 "problem's code (0 if nothing was damaged)."),
    json_out: bool = typer.Option(False, "--json", help="With --salvage: print the salvage "
                                  "report (schema wcodec.salvage/1) on stdout."),
):
    """Decode a wcodec file (or folder) to safetensors, bit for bit."""
    if salvage:
        from .cli_salvage import decode_salvage
        return decode_salvage(input, output, tensor, _limits(max_tensor_bytes, max_index_bytes,
                                                             limit),
                              threads, force, quiet, json_out, _check_target)
    from . import formats
    with errors_to_exit():
        reader_kw = dict(limits=_limits(max_tensor_bytes, max_index_bytes, limit),
                         verify_sha256=verify_sha256, threads=threads)
        if not input.exists():
            fail(f"no such file or folder: {input}", EXIT_IO)
        jobs = formats.plan_decode(input, output)
        for _, target, _ in jobs:
            _check_target(target, force)
        with progress_bar(show_progress(quiet), 0, "decoding") as advance:
            for src, target, dec in jobs:
                if dec:
                    if bands is None:
                        r = formats.decode_file(src, target, patterns=tensor,
                                                reader_kw=reader_kw, progress=advance)
                    else:
                        from .bandplan import decode_file_bands
                        r = decode_file_bands(src, target, bands, patterns=tensor,
                                              reader_kw=reader_kw, progress=advance)
                    if not quiet:
                        typer.echo(f"{r['source']} -> {r['output']}: {r['tensors']} tensors",
                                   err=True)
                else:
                    formats.copy_file(src, target)


@app.command()
def inspect(
    input: Path = typer.Argument(..., help="A .wcodec file, or a folder of them."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output (schema "
                                                        "wcodec.inspect/1)."),
    max_index_bytes: Optional[int] = typer.Option(None, help="Reject indexes larger than this."),
):
    """Show what a wcodec file holds: tensors, record kinds, codec chains, sizes. A folder:
    every .wcodec file in it, in name order (JSON: a list of reports)."""
    from .inspect_view import inspect_report, render_inspect
    from .reader import Reader
    with errors_to_exit():
        reports = []
        for path in _wcodec_files(input):
            with Reader(path, limits=_limits(None, max_index_bytes)) as r:
                reports.append(inspect_report(r))
        if json_out:
            typer.echo(json.dumps(reports if input.is_dir() else reports[0], indent=1))
        else:
            for report in reports:
                render_inspect(report)


@app.command()
def verify(
    input: Path = typer.Argument(..., help="A .wcodec file, or a folder of them."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output (schema "
                                                        "wcodec.verify/1)."),
    max_tensor_bytes: Optional[int] = typer.Option(None, help="Reject tensors larger than this."),
    max_index_bytes: Optional[int] = typer.Option(None, help="Reject indexes larger than this."),
    limit: Optional[List[str]] = typer.Option(None, "--limit", help="Any other decoder limit of "
                                              "spec §10 as NAME=N (repeatable): tensors, blocks, "
                                              "metadata-entries, metadata-value-bytes."),
):
    """Check structure, every CRC32C and every SHA-256; name each damaged block and tensor.

    Exits 0 when the file is intact, otherwise with the exit code of the first problem's class
    (the error a strict decoder reports first). Problems after a broken footer or index are found
    by walking the blocks (spec §13). A folder: every .wcodec file in it, in name order; the exit
    code is that of the first file with a problem (JSON: a list of reports)."""
    from .errors import FORMAT_ERROR_CLASSES
    from .salvage import verify_report
    with errors_to_exit():
        reports = []
        for path in _wcodec_files(input):
            problems, n_tensors, n_blocks, index_state = verify_report(
                path, limits=_limits(max_tensor_bytes, max_index_bytes, limit))
            reports.append({"schema": "wcodec.verify/1", "file": str(path), "ok": not problems,
                            "tensors": n_tensors, "blocks": n_blocks, "index": index_state,
                            "problems": problems})
        if json_out:
            typer.echo(json.dumps(reports if input.is_dir() else reports[0], indent=1))
        else:
            for report in reports:
                _print_verify(report, name_file=input.is_dir())
        for report in reports:
            if report["problems"]:
                raise typer.Exit(FORMAT_ERROR_CLASSES[report["problems"][0]["error"]].exit_code)


def _print_verify(report: dict, name_file: bool) -> None:
    problems = report["problems"]
    head = f"{report['file']}: " if name_file else ""
    for p in problems:
        where = ", ".join(f"{k} {p[k]!r}" if k == "tensor" else f"{k} {p[k]}"
                          for k in ("block", "offset", "tensor") if p.get(k) is not None)
        typer.echo(f"BAD  {head}{p['error']}: {p['message']}"
                   + (f" [{where}]" if where else ""))
    if not problems:
        typer.echo(f"OK   {report['file']}: {report['tensors']} tensors, {report['blocks']} "
                   "blocks, every checksum and digest verified")


def _wcodec_files(path: Path) -> list[Path]:
    """`path` itself, or the .wcodec files of a folder (an error if there are none)."""
    if not path.is_dir():
        return [path]
    from .errors import InputError
    from .formats import SUFFIX
    files = sorted(p for p in path.iterdir() if p.suffix == SUFFIX and p.is_file())
    if not files:
        raise InputError(f"{path}: no {SUFFIX} files in the folder")
    return files


@app.command()
def demo(
    workdir: Path = typer.Option(Path("wcodec-demo"), help="Folder for the demo's files."),
):
    """Make a small built-in model, then encode, verify, decode and compare it, and show the file."""
    from .demo import run_demo
    with errors_to_exit():
        sys.exit(run_demo(workdir))


def _register_conformance():
    from .harness import conformance_app
    app.add_typer(conformance_app, name="conformance",
                  help="Run the conformance suite against any decoder.")


_register_conformance()
from .cli_archive import register as _register_archive; _register_archive(app)  # noqa: E402,E702


def entry():
    app()


if __name__ == "__main__":
    entry()
