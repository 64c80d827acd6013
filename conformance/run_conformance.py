#!/usr/bin/env python3
"""Run the conformance harness without installing wcodec.

    python conformance/run_conformance.py run --decoder "python my_decoder.py {input} {output}"
    python conformance/run_conformance.py list --coverage

This is `wcodec conformance ...` itself: it loads codec/wcodec/harness.py by its path (the harness
imports nothing from the wcodec package; it needs only Python 3.9+, `typer` and `rich`) and uses
the manifest and vectors next to this file. See conformance/README.md.
"""
import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = HERE.parent / "codec" / "wcodec" / "harness.py"


def load_harness():
    spec = importlib.util.spec_from_file_location("wcodec_conformance_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # dataclasses look the module up while it loads
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    os.environ.setdefault("WCODEC_CONFORMANCE_DIR", str(HERE))
    harness = load_harness()
    sys.exit(harness.conformance_app(prog_name="run_conformance.py"))
