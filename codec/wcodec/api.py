"""The Python API, shaped like safetensors': save_file / load_file / safe_open."""

from __future__ import annotations

import os

from . import dtypes as D
from .errors import InputError
from .limits import DEFAULT_LIMITS, Limits
from .metadata import KEY_SOURCE_FORMAT
from .reader import Reader
from .writer import PIPELINE_BYTES, EncodeOptions, Writer


def _options(chunk_elements=None, level=None, threads=None, sha256=True, alignment_log2=None,
             codec=None) -> EncodeOptions:
    kw = dict(sha256=sha256)
    for k, v in (("chunk_elements", chunk_elements), ("level", level), ("threads", threads),
                 ("alignment_log2", alignment_log2), ("codec", codec)):
        if v is not None:
            kw[k] = v
    return EncodeOptions(**kw)


def save_file(tensors: dict, filename: str | os.PathLike, metadata: dict | None = None, *,
              chunk_elements: int | None = None, level: int | None = None,
              threads: int | None = None, sha256: bool = True, alignment_log2: int | None = None,
              codec: str | None = None, bands: int | None = None,
              band_options: dict | None = None, bits_per_weight: float | None = None,
              target_snr: float | None = None, max_rel_error: float | None = None,
              model=None, inputs=None, forward=None) -> dict | None:
    """Encode a dict of torch tensors to `filename` losslessly. The tensors are not modified.
    `bands=N` stores every float tensor as a band record of N bands (`band_options`: the fields
    of wcodec.bandplan.BandConfig, e.g. band1_bits=4, refine_bits=4, lossless=True).
    Lossy: one of `bits_per_weight`, `target_snr` (dB), `max_rel_error` picks a tool and a step
    per tensor by rate-distortion optimisation (wcodec.ratecontrol, docs/lossy.md); with `model`
    (an nn.Module) and calibration `inputs`, or `forward(state) -> output`, tensors are weighted
    by their sensitivity. Returns the rate-control report for a lossy encode."""
    from .torch_interop import tensor_to_raw

    if not isinstance(tensors, dict):
        raise InputError("save_file takes a dict of name -> torch.Tensor")
    opts = _options(chunk_elements, level, threads, sha256, alignment_log2, codec)
    if any(v is not None for v in (bits_per_weight, target_snr, max_rel_error)):
        if bands is not None:
            raise InputError("bands= and a lossy target cannot be combined")
        from .ratecontrol import encode_model
        return encode_model(tensors, filename, model=model, inputs=inputs, forward=forward,
                            bits_per_weight=bits_per_weight, target_snr=target_snr,
                            max_rel_error=max_rel_error, options=opts, metadata=metadata)
    band_kw = None
    if bands is not None:
        from . import bandplan as _bands
        cfg = _bands.BandConfig(bands=bands, **(band_options or {}))
        band_kw = _bands.plan(((n, *tensor_to_raw(n, t)[:2], _uint_view(n, t))
                               for n, t in tensors.items()), cfg, opts).kind_options
    with Writer(filename, metadata=metadata, system_metadata={KEY_SOURCE_FORMAT: "api"},
                options=opts, pipeline_bytes=PIPELINE_BYTES) as w:
        for name, t in tensors.items():
            dtype, shape, raw = tensor_to_raw(name, t)
            if band_kw is not None and _bands.eligible(dtype, shape):
                w.add(name, dtype, shape, raw, kind=_bands.Bands, **band_kw)
            else:
                w.add(name, dtype, shape, raw)


def _uint_view(name, t):
    from .torch_interop import tensor_to_raw
    dtype, _, raw = tensor_to_raw(name, t)
    return raw.view(dtype.uint)


def load_file(filename: str | os.PathLike, device="cpu", *, limits: Limits = DEFAULT_LIMITS,
              verify_sha256: bool | None = None, bands: int | None = None,
              threads: int | None = None) -> dict:
    """Decode every tensor of `filename` into a dict of torch tensors (`bands=k`: only the first
    k bands of band records). All chunks of all tensors are spread over `threads` worker threads
    (default: all cores). Every chunk's block CRC32C and, where the file has them, the CRC32C of
    its decoded bytes are checked; `verify_sha256` as in `Reader` (default: every SHA-256 but
    those of plain records with chunk CRCs; True: all; False: none)."""
    with safe_open(filename, framework="pt", device=device, limits=limits,
                   verify_sha256=verify_sha256, threads=threads) as f:
        if bands is not None:
            return {k: f.get_tensor(k, bands=bands) for k in f.keys()}
        from .torch_interop import raw_to_tensor
        raws = f.reader.read_all()
        return {k: raw_to_tensor(raws[k], f.reader.info(k).dtype, f.reader.info(k).shape, device)
                for k in raws}


class safe_open:  # noqa: N801  (named after safetensors.safe_open on purpose)
    """`with wcodec.safe_open(path) as f: f.keys(); f.get_tensor(name); f.metadata()`.

    framework is "pt" (torch tensors) or "np"/"numpy" (numpy arrays; bfloat16 and float8 have no
    numpy dtype and raise). Only the blocks of the tensors asked for are read.
    """

    def __init__(self, filename, framework: str = "pt", device="cpu", *,
                 limits: Limits = DEFAULT_LIMITS, verify_sha256: bool | None = None,
                 threads: int | None = None):
        if framework not in ("pt", "torch", "np", "numpy"):
            raise InputError(f"framework must be 'pt' or 'np', not {framework!r}")
        self.framework = "np" if framework in ("np", "numpy") else "pt"
        self.device = device
        self.reader = Reader(filename, limits=limits, verify_sha256=verify_sha256,
                             threads=threads)

    def keys(self) -> list[str]:
        return self.reader.keys()

    def metadata(self) -> dict:
        """User metadata as a str -> str dict, like safetensors (typed values: `metadata_typed`)."""
        return {k: v for k, v in self.reader.metadata().items()
                if not k.startswith("wcodec.") and isinstance(v, str)}

    def metadata_typed(self) -> dict:
        return self.reader.metadata()

    def info(self, name: str):
        return self.reader.info(name)

    def get_tensor(self, name: str, bands: int | None = None):
        """The tensor; `bands=k` decodes only the first k bands of a band record (all of them,
        and digest-checked, when k >= its band count; other records ignore it)."""
        from .bandplan import read_options
        raw, dtype, shape = self.reader.read_array(
            name, **read_options(self.reader.info(name), bands))
        if self.framework == "np":
            from .numpy_api import raw_to_numpy
            return raw_to_numpy(raw, dtype, shape)
        from .torch_interop import raw_to_tensor
        return raw_to_tensor(raw, dtype, shape, self.device)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["save_file", "load_file", "safe_open", "D"]
