"""Torch <-> raw bytes, without copying more than needed and without touching the caller's tensor."""

from __future__ import annotations

import numpy as np
import torch

from . import dtypes as D
from .errors import InputError

TORCH_DTYPES = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2, "int8": torch.int8, "int16": torch.int16,
    "int32": torch.int32, "int64": torch.int64, "uint8": torch.uint8, "uint16": torch.uint16,
    "uint32": torch.uint32, "uint64": torch.uint64, "bool": torch.bool,
}
FROM_TORCH = {v: k for k, v in TORCH_DTYPES.items()}


def tensor_to_raw(name: str, t) -> tuple[D.DType, tuple[int, ...], np.ndarray]:
    """(dtype, shape, read-only uint8 view of the element bytes). Copies only when the tensor is
    not a dense, contiguous CPU tensor."""
    if not isinstance(t, torch.Tensor):
        raise InputError(f"tensor {name!r}: expected a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise InputError(f"tensor {name!r}: only dense (strided) tensors can be stored")
    if t.dtype not in FROM_TORCH:
        raise InputError(f"tensor {name!r}: dtype {t.dtype} has no wcodec dtype")
    dtype = D.by_name(FROM_TORCH[t.dtype])
    shape = tuple(t.shape)
    # (is_contiguous ignores the strides of dimensions of size 0 or 1, a byte view does not)
    if t.dim() and t.device.type == "cpu" and t.is_contiguous() and t.stride(-1) == 1 \
            and t.numel() and not t.requires_grad and not t.is_conj() and not t.is_neg():
        # the common case in as few torch calls as possible: each one releases the GIL and
        # waits to get it back from the encoder threads that save_file keeps busy meanwhile
        raw = t.view(torch.uint8).numpy().reshape(-1)
        raw.flags.writeable = False
        return dtype, shape, raw
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg().contiguous()
    flat = t.reshape(-1)
    if flat.numel() == 0:
        raw = np.empty(0, dtype=np.uint8)
    else:
        if flat.stride(0) != 1:  # one element keeps any stride through contiguous()/reshape()
            flat = flat.as_strided((flat.numel(),), (1,))
        raw = flat.view(torch.uint8).numpy()
    raw = raw.view()
    raw.flags.writeable = False
    return dtype, shape, raw


def raw_to_tensor(raw: np.ndarray, dtype: D.DType, shape, device="cpu"):
    if raw.size == 0:  # torch cannot view a zero-size byte tensor as a wider dtype
        t = torch.empty(tuple(shape), dtype=TORCH_DTYPES[dtype.name])
    else:
        t = torch.from_numpy(raw).view(TORCH_DTYPES[dtype.name]).reshape(tuple(shape))
    if str(device) != "cpu":
        t = t.to(device)
    return t


def tensor_bytes(t) -> bytes:
    """The tensor's element bytes (spec §7.3), for bit-exact comparisons."""
    return tensor_to_raw("tensor", t)[2].tobytes()


def same_bits(a, b) -> bool:
    """True when two tensors have the same dtype, shape and bytes (NaN payloads included)."""
    return a.dtype == b.dtype and a.shape == b.shape and tensor_bytes(a) == tensor_bytes(b)
