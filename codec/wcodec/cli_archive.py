"""`wcodec archive ...`: checkpoint archives (wcodec.archive, spec/records/predicted.md §9).

    wcodec archive add ARCHIVE CHECKPOINT [--name N] [--keyframe-every K] [--lossy STEP |
                       --target-snr DB [--margin DB]] [--rounding dither|nearest|stochastic]
    wcodec archive list ARCHIVE [--json]
    wcodec archive extract ARCHIVE NAME -o out.safetensors
    wcodec archive verify ARCHIVE
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from .cli_util import EXIT_IO, EXIT_USAGE, errors_to_exit, fail

archive_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          pretty_exceptions_enable=False)


def _name_of(path: Path) -> str:
    n = path.name
    for suf in (".safetensors", ".pt", ".pth", ".bin"):
        if n.endswith(suf):
            return n[:-len(suf)]
    return n


@archive_app.command("add")
def add(
    archive: Path = typer.Argument(..., help="Archive folder (created if it does not exist)."),
    checkpoint: Path = typer.Argument(..., help="A .safetensors or PyTorch weights file."),
    name: Optional[str] = typer.Option(None, "--name", help="Checkpoint name (default: the "
                                       "file name without its suffix)."),
    keyframe_every: Optional[int] = typer.Option(None, "--keyframe-every", help="A keyframe "
                                                 "(no parent) every K checkpoints, 1-16 "
                                                 "(default 8; stored in the archive)."),
    keyframe: bool = typer.Option(False, "--keyframe", help="Make this checkpoint a keyframe."),
    lossy: Optional[float] = typer.Option(None, "--lossy", help="Quantize residuals with this "
                                          "step, relative to each tensor's RMS (e.g. 0.01); "
                                          "coded against the decoded predecessor, so errors "
                                          "do not accumulate. Keyframes stay lossless."),
    target_snr: Optional[float] = typer.Option(
        None, "--target-snr", help="Lossy with the step chosen per checkpoint: keep the "
        "previous checkpoint's relative step while the weights' SNR (10·log10 of weight energy "
        "over coding-error energy) stays at or above this many dB, else search the largest "
        "step that reaches it + --margin (a weight-space proxy; the Python API also takes a "
        "quality callback, see docs/predicted.md)."),
    margin: float = typer.Option(0.0, "--margin", help="With --target-snr: dB of headroom "
                                 "for a new step search, so the step lasts more checkpoints."),
    rounding: str = typer.Option("dither", "--rounding", help="Lossy residual rounding: "
                                 "dither (a fixed random threshold per weight, unbiased; the "
                                 "default), nearest, or stochastic (fresh offsets per "
                                 "checkpoint)."),
    level: int = typer.Option(3, help="zstd level used inside the lanes codec."),
    threads: Optional[int] = typer.Option(None, help="Worker threads (default: all cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary."),
):
    """Add a checkpoint, coded against the archive's newest checkpoint."""
    from .archive import Archive, load_weights
    from .archive_lossy import ROUNDINGS, LossyControl
    from .writer import EncodeOptions
    with errors_to_exit():
        if not checkpoint.is_file():
            fail(f"no such file: {checkpoint}", EXIT_IO)
        if lossy is not None and not 0 < lossy < 1:
            fail("--lossy takes a relative step in (0, 1), e.g. 0.01", EXIT_USAGE)
        if lossy is not None and target_snr is not None:
            fail("give --lossy STEP or --target-snr DB, not both", EXIT_USAGE)
        if not margin >= 0:
            fail("--margin must be >= 0", EXIT_USAGE)
        if rounding not in ROUNDINGS:
            fail(f"--rounding must be one of {', '.join(ROUNDINGS)}", EXIT_USAGE)
        control = None
        if lossy is not None:
            control = LossyControl(step=lossy, rounding=rounding)
        elif target_snr is not None:
            control = LossyControl(snr=target_snr, rounding=rounding, margin=margin)
        a = Archive(archive, create=True, keyframe_every=keyframe_every)
        tensors, meta = load_weights(checkpoint)
        e = a.add(tensors, name or _name_of(checkpoint), keyframe=True if keyframe else None,
                  lossy=control, options=EncodeOptions(level=level, threads=threads),
                  metadata={k: v for k, v in (meta or {}).items()
                            if not str(k).startswith("wcodec.")})
        if not quiet:
            kind = "keyframe" if e["keyframe"] else f"predicted from {e['parent_name']}"
            typer.echo(f"{checkpoint} -> {archive / e['file']}: {kind}, {e['tensors']} tensors "
                       f"({e['predicted_tensors']} predicted), {e['raw_bytes']:,} -> "
                       f"{e['bytes']:,} bytes ({100 * e['bytes'] / max(e['raw_bytes'], 1):.2f} %"
                       f"; intra would be {e['intra_bytes']:,})"
                       + (f", relative step {e['lossy_rel_step']:.5g}" if e.get("lossy") else ""),
                       err=True)


@archive_app.command("list")
def list_(
    archive: Path = typer.Argument(..., help="Archive folder."),
    json_out: bool = typer.Option(False, "--json", help="The manifest entries as JSON."),
):
    """List the checkpoints of an archive, oldest first."""
    from .archive import Archive
    with errors_to_exit():
        a = Archive(archive)
        if json_out:
            typer.echo(json.dumps(dict(schema=a.manifest["schema"],
                                       keyframe_every=a.manifest["keyframe_every"],
                                       checkpoints=a.checkpoints), indent=1))
            return
        typer.echo(f"{archive}: {len(a.checkpoints)} checkpoints, keyframe every "
                   f"{a.manifest['keyframe_every']}")
        total = raw = 0
        for e in a.checkpoints:
            total += e["bytes"]
            raw += e["raw_bytes"]
            kind = "keyframe" if e["keyframe"] else f"<- {e['parent_name']}"
            flag = " lossy" if e.get("lossy") else ""
            typer.echo(f"  {e['name']:<24} {e['bytes']:>14,} bytes  "
                       f"{100 * e['bytes'] / max(e['raw_bytes'], 1):6.2f} %  {kind}{flag}  "
                       f"sha256 {e['sha256'][:16]}")
        typer.echo(f"  total {total:,} of {raw:,} bytes ({100 * total / max(raw, 1):.2f} %)")


@archive_app.command("extract")
def extract(
    archive: Path = typer.Argument(..., help="Archive folder."),
    name: str = typer.Argument(..., help="Checkpoint name (see `wcodec archive list`)."),
    output: Path = typer.Option(..., "-o", "--output", help="Target .safetensors file."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary."),
):
    """Decode one checkpoint to safetensors, bit for bit (lossless) or as stored (lossy)."""
    from .archive import Archive
    with errors_to_exit():
        if output.exists() and not force:
            fail(f"{output} exists (use --force to replace it)", EXIT_USAGE)
        a = Archive(archive)
        r = a.decode_to(name, output)
        if not quiet:
            chain = " <- ".join(e["name"] for e in a.chain(name))
            typer.echo(f"{archive}/{name} -> {output}: {r['tensors']} tensors (chain {chain})",
                       err=True)


@archive_app.command("verify")
def verify(archive: Path = typer.Argument(..., help="Archive folder.")):
    """Check that every file is present with the SHA-256 the manifest (and its children) name."""
    from .archive import Archive
    from .errors import UnresolvedReference
    with errors_to_exit():
        problems = Archive(archive).verify()
        for p in problems:
            typer.echo(f"BAD  {p['name']}: {p['problem']}")
        if problems:
            raise typer.Exit(UnresolvedReference.exit_code)
        typer.echo(f"OK   {archive}: every checkpoint present and unchanged")


def register(app) -> None:
    app.add_typer(archive_app, name="archive",
                  help="Checkpoint archives: each checkpoint coded against the one before.")


__all__ = ["archive_app", "register", "os"]
