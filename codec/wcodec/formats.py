"""Weights files in and out of wcodec: .safetensors, PyTorch .pt/.pth/.bin state dicts (loaded with
weights_only=True, never unpickling code) and model folders (sharded files and their index JSON)."""

from __future__ import annotations

import os
import shutil
from fnmatch import fnmatchcase
from dataclasses import dataclass
from pathlib import Path

from . import dtypes as D
from .errors import InputError, UsageError
from .metadata import KEY_SOURCE_FILE, KEY_SOURCE_FORMAT
from .reader import Reader
from .safetensors_io import read_header, write_safetensors
from .writer import PIPELINE_BYTES, EncodeOptions, Writer

WEIGHT_SUFFIXES = {".safetensors": "safetensors", ".pt": "pytorch", ".pth": "pytorch",
                   ".bin": "pytorch"}
SUFFIX = ".wcodec"


def source_format(path: Path) -> str:
    try:
        return WEIGHT_SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise InputError(f"{path}: not a weights file (.safetensors, .pt, .pth, .bin)") from None


def iter_tensors(path: Path):
    """(metadata, generator of (name, torch.Tensor)) for one weights file; one tensor at a time
    for safetensors, whole state dict for PyTorch files (that is how torch.load works)."""
    fmt = source_format(path)
    if fmt == "safetensors":
        from safetensors import SafetensorError, safe_open
        names, meta = read_header(path)

        try:
            # safetensors' own parser validates the header (dtypes, shapes, offsets that tile the
            # data); nothing is read through its map
            with safe_open(str(path), framework="pt"):
                pass
        except SafetensorError as e:
            raise InputError(f"{path}: {e}") from None
        return meta, _read_each(path, names)
    import pickle

    import torch
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a loadable PyTorch state dict "
                         f"(weights_only=True): {str(e).splitlines()[0]}") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise InputError(f"{path}: expected a flat dict of str -> tensor (a state dict)")
    return {}, iter(obj.items())


def _read_each(path: Path, names: list[str]):
    """One tensor at a time, each read into its own buffer. Reading through a map of the whole
    file would leave every page already encoded resident, so peak memory would grow with the
    file rather than with its largest tensor."""
    import torch

    from .safetensors_io import read_entries
    base, entries = read_entries(path)
    with open(path, "rb") as f:
        for name in names:
            dtype_name, shape, begin, end = entries[name]
            buf = bytearray(end - begin)
            if buf:
                f.seek(base + begin)
                if f.readinto(buf) != len(buf):
                    raise InputError(f"{path}: tensor {name!r} is cut short")
                flat = torch.frombuffer(buf, dtype=torch.uint8)
            else:
                flat = torch.empty(0, dtype=torch.uint8)
            yield name, _bytes_to_tensor(flat, dtype_name, shape)


def _bytes_to_tensor(flat, dtype_name: str, shape):
    from .torch_interop import raw_to_tensor
    return raw_to_tensor(flat.numpy(), D.by_name(dtype_name), shape)


def encode_file(src: Path, dst: Path, options: EncodeOptions, progress=None) -> dict:
    from .torch_interop import tensor_to_raw  # torch only where tensors come in
    meta, tensors = iter_tensors(src)
    system = {KEY_SOURCE_FORMAT: source_format(src), KEY_SOURCE_FILE: src.name}
    count = 0
    # every tensor comes from a fresh read, so the writer may keep some in flight
    with Writer(dst, metadata=meta, system_metadata=system, options=options,
                progress=progress, pipeline_bytes=PIPELINE_BYTES) as w:
        for name, t in tensors:
            dtype, shape, raw = tensor_to_raw(name, t)
            w.add(name, dtype, shape, raw)
            count += 1
    return dict(source=str(src), output=str(dst), tensors=count)


def decode_file(src: Path, dst: Path, *, patterns=None, reader_kw=None, progress=None,
                options=None) -> dict:
    """Decode to safetensors; `patterns` (fnmatch, case-sensitive) keeps only matching tensors;
    `options(info)` gives each tensor's read options (e.g. a band prefix)."""
    with Reader(src, **(reader_kw or {})) as r:
        keep = [n for n in r.keys()
                if not patterns or any(fnmatchcase(n, p) for p in patterns)]
        if patterns and not keep:
            raise UsageError(f"{src}: no tensor matches {list(patterns)}")
        entries = [(n, r.info(n).dtype, r.info(n).shape) for n in keep]
        meta = {k: v for k, v in r.metadata().items()
                if not k.startswith("wcodec.") and isinstance(v, str)}

        def produce(name):
            data = r.read_bytes(name, **(options(r.info(name)) if options else {}))
            if progress:
                progress(data.size)
            return data
        write_safetensors(dst, entries, meta, produce)
    return dict(source=str(src), output=str(dst), tensors=len(keep))


def is_weights(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES


def plan_folder_encode(src: Path, dst: Path) -> list[tuple[Path, Path, bool]]:
    """(source, target, encode?) for every file of a model folder; other files are copied."""
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"{dst} exists and is not a folder")
    plan = []
    for p in sorted(src.iterdir()):
        if p.is_dir():
            continue  # nested folders are not part of a model folder's weights
        if is_weights(p):
            plan.append((p, dst / (p.stem + SUFFIX), True))
        else:
            plan.append((p, dst / p.name, False))
    if not any(enc for _, _, enc in plan):
        raise InputError(f"{src}: no weights files (.safetensors, .pt, .pth, .bin) in the folder")
    return plan


def plan_decode(src: Path, output: Path | None) -> list[tuple[Path, Path, bool]]:
    """(source, target, decode?) jobs for `wcodec decode`: a file -> one .safetensors (next to it
    unless `output` is given); a folder -> a mirrored folder (`x.wcodec/` -> `x/`, else
    `x.decoded/`), created here."""
    if not src.is_dir():
        return [(src, output or src.with_suffix(".safetensors"), True)]
    name = src.name[:-len(SUFFIX)] if src.name.endswith(SUFFIX) else src.name + ".decoded"
    out = output or src.with_name(name)
    jobs = plan_folder_decode(src, out)
    out.mkdir(parents=True, exist_ok=True)
    return jobs


def plan_folder_decode(src: Path, dst: Path) -> list[tuple[Path, Path, bool]]:
    plan = []
    for p in sorted(src.iterdir()):
        if p.is_dir():
            continue
        if p.suffix == SUFFIX:
            plan.append((p, dst / (p.stem + ".safetensors"), True))
        else:
            plan.append((p, dst / p.name, False))
    if not any(dec for _, _, dec in plan):
        raise InputError(f"{src}: no {SUFFIX} files in the folder")
    return plan


def copy_file(src: Path, dst: Path) -> None:
    from .atomic import AtomicFile
    with open(src, "rb") as f, AtomicFile(dst) as out:
        shutil.copyfileobj(f, out)  # through AtomicFile.write, which counts the position


def total_bytes(path: Path) -> int:
    return os.path.getsize(path)


__all__ = ["encode_file", "decode_file", "plan_folder_encode", "plan_folder_decode", "copy_file",
           "iter_tensors", "D"]
