"""CLI plumbing: error -> exit code, progress bars only on a terminal, data on stdout only."""

from __future__ import annotations

import contextlib
import os
import sys

import typer

from .errors import FormatError, WcodecError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_IO = 3
EXIT_INPUT = 4
EXIT_FAILURES = 5


def fail(message: str, code: int) -> None:
    typer.echo(f"wcodec: error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def errors_to_exit():
    """Every known failure ends as one line on stderr and a documented exit code; never a
    traceback (set WCODEC_DEBUG=1 to see one for an internal error)."""
    try:
        yield
    except typer.Exit:
        raise
    except FormatError as e:
        fail(f"{e.error_class}: {e}", e.exit_code)
    except WcodecError as e:
        fail(str(e), e.exit_code)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        fail(f"{e.strerror or e}: {e.filename}", EXIT_IO)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as e:  # a bug in wcodec, not bad input
        if os.environ.get("WCODEC_DEBUG"):
            raise
        fail(f"internal error: {type(e).__name__}: {e} (set WCODEC_DEBUG=1 for a traceback; "
             "please report it)", EXIT_INTERNAL)


def show_progress(quiet: bool, json_out: bool = False) -> bool:
    return not quiet and not json_out and sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, description: str):
    """Yields a callable advance(n_bytes); a no-op when not enabled."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                               TransferSpeedColumn)
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as p:
        task = p.add_task(description, total=total)
        yield lambda n: p.advance(task, n)
