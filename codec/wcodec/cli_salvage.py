"""`wcodec decode --salvage`: recover the intact tensors of damaged files (wcodec.salvage).

Exit codes: 0 when every file was intact; otherwise the code of the first problem's class
(spec §11), as `verify` does, even though the recovered tensors were written. The output of a
file is written when its index could be read (possibly with no tensor in it); when no INDEX block
was found nothing is written for that file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .cli_util import EXIT_IO, errors_to_exit, fail


def decode_salvage(input: Path, output, patterns, limits, threads, force, quiet, json_out,
                   check_target) -> None:
    from . import formats
    from .errors import FORMAT_ERROR_CLASSES
    from .salvage import salvage_file
    with errors_to_exit():
        if not input.exists():
            fail(f"no such file or folder: {input}", EXIT_IO)
        jobs = formats.plan_decode(input, output)
        for _, target, _ in jobs:
            check_target(target, force)
        reports, first = [], None
        for src, target, dec in jobs:
            if not dec:
                formats.copy_file(src, target)
                continue
            rep = salvage_file(src, target, patterns=patterns,
                               reader_kw=dict(limits=limits, threads=threads))
            reports.append(rep.as_json() | {"output": str(target) if rep.index != "missing"
                                            else None})
            if rep.problems and first is None:
                first = rep.problems[0]["error"]
            if not quiet:
                for p in rep.lost:
                    typer.echo(f"LOST {p.get('tensor')!r}: {p['error']}: {p['message']}", err=True)
                wrote = f" -> {target}" if rep.index != "missing" else " (nothing written)"
                typer.echo(f"{src}{wrote}: {len(rep.recovered)} tensors recovered, "
                           f"{len(rep.lost)} lost, index {rep.index}", err=True)
        if json_out:
            typer.echo(json.dumps(reports[0] if len(reports) == 1 else
                                  {"schema": "wcodec.salvage/1", "files": reports}, indent=1))
        if first is not None:
            raise typer.Exit(FORMAT_ERROR_CLASSES[first].exit_code)
