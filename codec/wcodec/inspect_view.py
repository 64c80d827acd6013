"""`wcodec inspect`: the report (a plain dict, also the --json output) and its table."""

from __future__ import annotations

import math
import os

from .reader import Reader

SCHEMA = "wcodec.inspect/1"


def _snr(error: dict | None):
    if not error or error["mean_squared_error"] <= 0:
        return None
    return 10 * math.log10(error["signal_power"] / error["mean_squared_error"]) \
        if error["signal_power"] > 0 else None


def inspect_report(r: Reader) -> dict:
    tensors = []
    for name, t in r.tensors.items():
        tensors.append({
            "name": name, "dtype": t.dtype.name, "shape": list(t.shape),
            "record_kind": t.kind_name, "codec_chain": [s.chain.describe() for s in t.streams],
            "chunks": sum(len(s.chunk_blocks) for s in t.streams),
            "bytes": t.nbytes, "stored_bytes": t.stored_bytes,
            "ratio": (t.stored_bytes / t.nbytes) if t.nbytes else None,
            "sha256": t.sha256.hex() if t.sha256 else None, "lossy": t.lossy,
            "chunk_crc32c": t.chunk_crcs,
            "error": dict({k: v for k, v in t.error.items() if not k.startswith("_")},
                          snr_db=_snr(t.error)) if t.error else None,
        })
        if t.record_kind == 3:  # bands: each band's size and the stored error of each prefix
            from .bandplan import band_report
            tensors[-1]["bands"] = band_report(r, name)
        if t.record_kind == 4:  # predicted: where the reference comes from, down to its base
            from .records.predicted import describe_chain
            tensors[-1]["predicted"] = describe_chain(r, name)
    raw = sum(t["bytes"] for t in tensors)
    size = os.path.getsize(r.path)
    return {
        "schema": SCHEMA, "file": r.path, "format_version": "%d.%d" % r.version,
        "alignment": r.alignment, "file_bytes": size, "tensor_bytes": raw,
        "ratio": size / raw if raw else None, "blocks": len(r.blocks),
        "metadata": {k: (v if isinstance(v, (str, int, float, bool)) else v.hex())
                     for k, v in r.metadata().items()},
        "tensors": tensors,
        **({"band_summary": _band_summary(tensors)} if any(t.get("bands") for t in tensors)
           else {}),
    }


def _band_summary(tensors):
    from .bandplan import band_summary
    return band_summary([t.get("bands") for t in tensors])


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render_inspect(rep: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    import sys
    # a pipe or file gets the whole table, not one folded to 80 columns
    console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)
    table = Table(title=f"{rep['file']} (format {rep['format_version']})", show_footer=True)
    n = len(rep["tensors"])
    ratio = f"{100 * rep['ratio']:.2f} %" if rep["ratio"] is not None else "-"
    table.add_column("tensor", footer=f"{n} tensors", no_wrap=True)
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("record")
    table.add_column("codec chain")
    table.add_column("bytes", justify="right", footer=_human(rep["tensor_bytes"]))
    table.add_column("stored", justify="right", footer=_human(rep["file_bytes"]) + " file")
    table.add_column("ratio", justify="right", footer=ratio)
    for t in rep["tensors"]:
        r = f"{100 * t['ratio']:.2f} %" if t["ratio"] is not None else "-"
        kind = t["record_kind"] + (f" (SNR {t['error']['snr_db']:.1f} dB)"
                                   if t["error"] and t["error"]["snr_db"] else "")
        table.add_row(t["name"], t["dtype"], "×".join(map(str, t["shape"])) or "scalar", kind,
                      "; ".join(t["codec_chain"]), _human(t["bytes"]), _human(t["stored_bytes"]),
                      r)
    console.print(table)
    for t in rep["tensors"]:
        p = t.get("predicted")
        if p:
            chain = " <- ".join([t["name"]] + [
                (c["tensor"] if c["same_file"] else f"{c['file']}:{c['tensor']}")
                + f" ({c['record_kind']})" for c in p.get("chain", [])])
            how = f"{p['predictor']}, {p['residual']}" + (
                f", permuted {p['permutation']}" if p["permutation"] != "none" else "")
            console.print(f"{t['name']}: predicted ({how}); chain {chain}"
                          + (f"; {p['chain_error']}" if "chain_error" in p else ""),
                          markup=False, highlight=False)
    if rep.get("band_summary"):
        from .bandplan import render_bands
        render_bands(console, rep)
    if rep["metadata"]:
        console.print("metadata: " + ", ".join(f"{k}={v!r}" for k, v in rep["metadata"].items()))
