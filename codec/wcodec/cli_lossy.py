"""`wcodec encode --bits-per-weight B | --target-snr D | --max-rel-error E`: lossy encoding of a
weights file under one rate-control target (wcodec.ratecontrol, docs/lossy.md). cli.py calls
`encode_file_lossy` when one of the three options is given."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UsageError


def target_from_options(bits_per_weight, target_snr, max_rel_error):
    """The ratecontrol.Target of the CLI options, or None when none is given (lossless)."""
    given = [v for v in (bits_per_weight, target_snr, max_rel_error) if v is not None]
    if not given:
        return None
    if len(given) > 1:
        raise UsageError("give at most one of --bits-per-weight, --target-snr, --max-rel-error")
    from .ratecontrol import Target
    return Target(bits_per_weight, target_snr, max_rel_error)


def encode_file_lossy(src: Path, dst: Path, options, target, progress=None) -> dict:
    """Encode one weights file under `target`; every float tensor becomes a `quantized` or a
    `plain` record, whichever rate control picks. Returns the rate-control report."""
    from . import formats
    from .metadata import KEY_SOURCE_FILE, KEY_SOURCE_FORMAT
    from .ratecontrol import encode_tensors
    from .torch_interop import tensor_to_raw

    meta, gen = formats.iter_tensors(src)
    tensors = []
    for name, t in gen:
        dtype, shape, raw = tensor_to_raw(name, t)
        tensors.append((name, dtype, shape,
                        np.ascontiguousarray(raw).reshape(-1).view(np.uint8).view(dtype.uint)))
    system = {KEY_SOURCE_FORMAT: formats.source_format(src), KEY_SOURCE_FILE: src.name}
    rep = encode_tensors(tensors, dst, target, options=options, metadata=meta,
                         system_metadata=system)
    rep.update(source=str(src), tensors=len(tensors))
    return rep


def summary(rep: dict) -> str:
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(rep["records"].items()))
    return (f"{rep['source']} -> {rep['output']}: {rep['target']}: "
            f"{rep['bits_per_weight']:.3f} bits/weight, SNR {rep['snr_db']:.2f} dB, "
            f"{rep['bytes']:,} bytes ({kinds}), {rep['seconds']:.1f} s")
