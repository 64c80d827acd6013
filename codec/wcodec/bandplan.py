"""Band records for whole models (spec/records/bands.md, "Encoder guidance"): which tensors get
bands, band 1's step for a bits-per-weight / SNR / step target, and the file-level encode and
decode that the CLI's `--bands` uses.

Band 1's step is one nominal step Δ for the whole model when scales are per tensor (equal step =
equal slope, the allocation that maximises the model's SNR at a given rate), or one step relative to
each channel's (group's) RMS otherwise. A bits-per-weight target is met by bisection on Δ, each
probe coding band 1's levels of a sample of rows with the real codec chain, so the target is in
stored bytes, not in an entropy estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import dtypes as D
from . import quant as Q
from .errors import InputError, UsageError
from .records.bands import FLOAT_DTYPES, Bands, BandParams, band1_levels, band1_scales

SAMPLE_FRACTION = 1 / 8


@dataclass
class BandConfig:
    """What `--bands` asks for. Exactly one of band1_bits / band1_snr / band1_step (default:
    band1_bits = 4)."""

    bands: int = 3
    band1_bits: float | None = None
    band1_snr: float | None = None
    band1_step: float | None = None
    refine_bits: int | list = 4
    quantizer: str = "dependent"
    scales: str = "tensor"
    lossless: bool = True
    lam: float = 0.0
    band1_level: int | None = 19      # zstd level of band 1's streams (records/bands.py)
    kind_options: dict = field(default_factory=dict)  # filled in by plan()

    def __post_init__(self):
        given = [v for v in (self.band1_bits, self.band1_snr, self.band1_step) if v is not None]
        if len(given) > 1:
            raise UsageError("give at most one of band-1 bits, SNR and step")
        if not given:
            self.band1_bits = 4.0
        if not 2 <= int(self.bands) <= 8:
            raise UsageError(f"--bands must be 2..8, not {self.bands}")

    @property
    def relative(self) -> bool:
        """Steps relative to each scale's RMS (channel/group scales, or an SNR target)."""
        return Q.ScaleLayout.parse(self.scales).mode != Q.SCALE_TENSOR or \
            self.band1_snr is not None


def eligible(dtype: D.DType, shape) -> bool:
    n = 1
    for d in shape:
        n *= int(d)
    return dtype.name in FLOAT_DTYPES and n > 0


def _sample_rows(rows: int, cols: int) -> np.ndarray:
    """Every k-th row, k chosen so that about SAMPLE_FRACTION of the elements are kept (at
    least 4096 elements, or all of a small tensor)."""
    n = rows * cols
    keep = max(4096, int(n * SAMPLE_FRACTION))
    if keep >= n or rows == 1:
        return np.arange(rows)
    stride = max(1, rows * cols // keep)
    return np.arange(0, rows, stride)


class _Probe:
    """Band-1 cost of a sample of one tensor at a given step (bytes, scaled to the tensor)."""

    def __init__(self, dtype, shape, elements):
        rows, cols = Q.matrix_shape(shape)
        xm = Q.to_float64(elements, dtype).reshape(rows, cols)
        idx = _sample_rows(rows, cols)
        self.xs = np.ascontiguousarray(xm[idx])
        self.weight = rows / len(idx)
        self.n = rows * cols
        self.sig = float(np.sum(np.where(np.isfinite(xm), xm, 0.0) ** 2))
        self.rms = math.sqrt(self.sig / self.n) if self.n else 0.0

    def cost(self, cfg: BandConfig, g: float, options) -> float:
        layout = Q.ScaleLayout.parse(cfg.scales)
        qz = Q.QUANTIZER_CODES[cfg.quantizer]
        if cfg.band1_level is not None:   # cost band 1 with the chain it will be coded with
            options = replace(options, level=int(cfg.band1_level))
        kw = dict(rel_step=g) if cfg.relative else dict(step=g)
        sc, _, u = band1_scales(self.xs, layout, qz, **kw)
        q = band1_levels(u, qz, cfg.lam)
        ldt, z = Q.pack_levels(q)
        total = _coded_bytes(z, ldt, options)
        if layout.mode != Q.SCALE_TENSOR:
            f32 = D.BY_NAME["float32"]
            total += _coded_bytes(sc.reshape(-1).view(np.uint32), f32, options)
        return total * self.weight


def _coded_bytes(elements: np.ndarray, dtype: D.DType, options) -> int:
    chain = options.chain_for(dtype)
    ce = options.chunk_elements
    size = sum(len(chain.encode_chunk(elements[c:c + ce], dtype))
               for c in range(0, elements.size, ce))
    return min(size, elements.size * dtype.itemsize)  # the writer stores raw when that is smaller


def plan(tensors, cfg: BandConfig, options, *, log=None) -> BandConfig:
    """Fix band 1's step for these tensors ((name, dtype, shape, elements) tuples, only eligible
    ones are looked at); returns cfg with kind_options set for Writer.add(kind=Bands, ...)."""
    opts = dict(bands=int(cfg.bands), refine_bits=cfg.refine_bits, quantizer=cfg.quantizer,
                scales=cfg.scales, lossless=cfg.lossless, lam=cfg.lam,
                band1_level=cfg.band1_level)
    if cfg.band1_step is not None:
        opts["rel_step" if cfg.relative else "step"] = float(cfg.band1_step)
    elif cfg.band1_snr is not None:
        opts["snr_db"] = float(cfg.band1_snr)
    else:
        probes = [_Probe(dt, sh, el) for _, dt, sh, el in tensors if eligible(dt, sh)]
        if not probes:
            cfg.kind_options = opts
            return cfg
        n = sum(p.n for p in probes)
        rms = math.sqrt(sum(p.sig for p in probes) / n) or 1.0
        target = float(cfg.band1_bits) * n / 8

        def bytes_at(log2g):
            return sum(p.cost(cfg, 2.0 ** log2g, options) for p in probes)
        # a uniform step Δ costs about h - log2 Δ bits: start near rms·2^(2 - bits)
        g0 = (1.0 if cfg.relative else rms) * 2.0 ** (2.0 - float(cfg.band1_bits))
        lo, hi = math.log2(g0) - 2, math.log2(g0) + 2
        while bytes_at(lo) < target and lo > -200:
            lo -= 2
        while bytes_at(hi) > target and hi < 200:
            hi += 2
        for _ in range(12):
            mid = (lo + hi) / 2
            if bytes_at(mid) > target:
                lo = mid
            else:
                hi = mid
        g = 2.0 ** hi
        if log:
            log(f"band 1: {'relative ' if cfg.relative else ''}step {g:.6g} for "
                f"{cfg.band1_bits} bits/weight (sampled estimate)")
        opts["rel_step" if cfg.relative else "step"] = g
    cfg.kind_options = opts
    return cfg


# -- files -------------------------------------------------------------------------------------------
def encode_file_bands(src: Path, dst: Path, options, cfg: BandConfig, progress=None,
                      log=None) -> dict:
    """Like formats.encode_file, with every float tensor stored as a band record."""
    from . import formats
    from .metadata import KEY_SOURCE_FILE, KEY_SOURCE_FORMAT
    from .torch_interop import tensor_to_raw
    from .writer import Writer

    def first_pass():  # one tensor at a time: the planner keeps only a sample of each
        _, gen = formats.iter_tensors(src)
        for name, t in gen:
            dtype, shape, raw = tensor_to_raw(name, t)
            yield name, dtype, shape, raw.view(dtype.uint)

    if not cfg.kind_options:
        plan(first_pass() if cfg.band1_bits is not None else [], cfg, options, log=log)
    meta, tensors = formats.iter_tensors(src)
    system = {KEY_SOURCE_FORMAT: formats.source_format(src), KEY_SOURCE_FILE: src.name}
    count = 0
    with Writer(dst, metadata=meta, system_metadata=system, options=options,
                progress=progress) as w:
        for name, t in tensors:
            dtype, shape, raw = tensor_to_raw(name, t)
            if eligible(dtype, shape):
                w.add(name, dtype, shape, raw, kind=Bands, **cfg.kind_options)
            else:
                w.add(name, dtype, shape, raw)
            count += 1
    return dict(source=str(src), output=str(dst), tensors=count)


def read_options(info, bands: int | None) -> dict:
    """Options for Reader.read_bytes that decode the first `bands` bands of a band record; {}
    (a full, digest-checked decode) for other records and for bands >= the record's count."""
    if bands is None or info.kind_name != "bands":
        return {}
    if int(bands) < 1:
        raise UsageError(f"bands must be >= 1, not {bands}")
    n = BandParams.unpack(bytes(info.params)).band_count
    return {} if int(bands) >= n else {"bands": int(bands)}


def decode_file_bands(src: Path, dst: Path, bands: int, *, patterns=None, reader_kw=None,
                      progress=None) -> dict:
    """Like formats.decode_file, decoding only the first `bands` bands of band records."""
    from . import formats
    return formats.decode_file(src, dst, patterns=patterns, reader_kw=reader_kw,
                               progress=progress, options=lambda info: read_options(info, bands))


def band_sizes(reader, name: str) -> list[int] | None:
    """Stored bytes of each band of a band record (the scale stream counts to band 1)."""
    info = reader.info(name)
    if info.kind_name != "bands":
        return None
    d = Bands.describe(info.record)
    return [sum(reader.blocks[b].payload_length for s in streams
                for b in info.streams[s].chunk_blocks) for streams in d["band_streams"]]


__all__ = ["BandConfig", "plan", "eligible", "encode_file_bands", "decode_file_bands",
           "read_options", "band_sizes"]


# -- inspect -----------------------------------------------------------------------------------------
def band_report(reader, name: str) -> dict | None:
    """What `inspect` shows of a band record, from the index alone (nothing is decoded): each
    band's stored bytes and, for every prefix k, its cumulative size and the error the encoder
    stored in the params (spec/records/bands.md, `prefix_error`)."""
    info = reader.info(name)
    if info.kind_name != "bands":
        return None
    d = Bands.describe(info.record)
    sizes = band_sizes(reader, name)
    n = max(1, int(np.prod(info.shape)) if len(info.shape) else 1)
    prefixes, total = [], 0
    for k, (size, e) in enumerate(zip(sizes, d["prefix_error"]), start=1):
        total += size
        prefixes.append(dict(bands=k, stored_bytes=total, bits_per_weight=8 * total / n,
                             max_abs_error=e["max_abs_error"],
                             mean_squared_error=e["mean_squared_error"],
                             signal_power=e["signal_power"], snr_db=e["snr_db"],
                             sha256=d["prefix_sha256"][k - 1] if d["prefix_sha256"] else None))
    return dict(bands=d["bands"], remainder=d["remainder"], quantizer=d["quantizer"],
                scales=d["scales"], refine_bits=d["refine_bits"], elements=n,
                band_bytes=sizes, prefixes=prefixes)


def band_summary(reports: list[dict]) -> list[dict]:
    """Whole-file view of the band records' prefixes: for k = 1..max N, the stored bytes of bands
    1..min(k, N) of every band record, bits per weight, and the SNR over their weights from the
    stored per-tensor ErrorStats (each weighted by the tensor's element count)."""
    reports = [r for r in reports if r]
    if not reports:
        return []
    n = sum(r["elements"] for r in reports)
    out = []
    for k in range(1, max(r["bands"] for r in reports) + 1):
        size = sse = sig = 0.0
        for r in reports:
            p = r["prefixes"][min(k, r["bands"]) - 1]
            size += p["stored_bytes"]
            sse += p["mean_squared_error"] * r["elements"]
            sig += p["signal_power"] * r["elements"]
        snr = 10 * math.log10(sig / sse) if sse > 0 and sig > 0 else None
        out.append(dict(bands=k, stored_bytes=int(size), bits_per_weight=8 * size / n,
                        snr_db=snr, exact=sse == 0))
    return out


def render_bands(console, rep: dict) -> None:
    """The band part of `inspect`'s table output."""
    from rich.table import Table
    rows = [t for t in rep["tensors"] if t.get("bands")]
    if not rows:
        return
    for t in rows:
        b = t["bands"]
        parts = []
        for p in b["prefixes"]:
            err = "exact" if p["mean_squared_error"] == 0 and p["max_abs_error"] == 0 else (
                f"{p['snr_db']:.1f} dB" if p["snr_db"] is not None else "-")
            parts.append(f"{p['bands']}: {p['bits_per_weight']:.2f} b/w {err}")
        console.print(f"{t['name']}: {b['bands']} bands ({b['quantizer']}, {b['scales']}, "
                      f"refine {b['refine_bits']}{', remainder' if b['remainder'] else ''}); "
                      "prefix " + "; ".join(parts), markup=False, highlight=False)
    table = Table(title="band prefixes (sizes stored, errors from the encoder's ErrorStats)")
    for col in ("bands decoded", "stored", "bits/weight", "SNR"):
        table.add_column(col, justify="right")
    for s in rep.get("band_summary", []):
        table.add_row(str(s["bands"]), f"{s['stored_bytes']:,} B", f"{s['bits_per_weight']:.3f}",
                      "exact" if s["exact"] else (f"{s['snr_db']:.2f} dB"
                                                  if s["snr_db"] is not None else "-"))
    console.print(table)


__all__ += ["band_report", "band_summary", "render_bands"]
