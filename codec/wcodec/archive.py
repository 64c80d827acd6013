"""Checkpoint archives (spec/records/predicted.md, "Archives"): a folder of wcodec files, one per
checkpoint, each coded against the one before it with `predicted` records that name their parent
file by the SHA-256 of its whole content, and a keyframe (no parent) every K checkpoints.

    archive/
      archive.json              manifest (schema wcodec.archive/1): order, names, hashes, parents
      step-000000.wcodec        keyframe
      step-000020.wcodec        predicted from step-000000.wcodec
      ...

The manifest is a convenience: every file is self-describing, a decoder finds each parent among the
folder's files by SHA-256 alone, and a missing or changed parent is UnresolvedReference (exit 20),
never silently wrong weights. Lossy archives quantize each residual against the *decoded*
predecessor, so errors do not accumulate along the chain.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .atomic import AtomicFile
from .errors import InputError, UsageError
from .reader import Reader
from .records.plain import Plain
from .records.predicted import (KIND_ID, MAX_DEPTH, FLOAT_DTYPES, ParentResolver, PredParams,
                                Reference, file_sha256, reference_chain)
from .records.predicted_encoder import choose, fit_decay
from .archive_lossy import LossyControl, StepSearch, lossy_eligible, parent_steps
from .writer import EncodeOptions, Writer

MANIFEST = "archive.json"
SCHEMA = "wcodec.archive/1"
DEFAULT_KEYFRAME_EVERY = 8


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def open_reader(path, search=None, **reader_kw) -> Reader:
    """A Reader whose predicted records find their parents among `search` (files or folders;
    default: the file's own folder)."""
    r = Reader(path, **reader_kw)
    folder = os.path.dirname(os.path.abspath(path))
    paths = []
    for s in list(search or []) + [folder]:  # each place once
        if os.path.realpath(s) not in {os.path.realpath(p) for p in paths}:
            paths.append(os.path.abspath(s))
    r.parent_resolver = ParentResolver(paths, reader_kw=reader_kw)
    return r


def read_all(path, search=None, **reader_kw) -> dict:
    """name -> (dtype, shape, decoded bytes) for every tensor of a file."""
    r = open_reader(path, search, **reader_kw)
    try:
        return {n: (r.info(n).dtype, r.info(n).shape, r.read_bytes(n)) for n in r.keys()}
    finally:
        r.parent_resolver.close()
        r.close()


def load_weights(path) -> tuple[dict, dict]:
    """A weights file (safetensors / PyTorch) as name -> (DType, shape, bytes), plus metadata."""
    from .formats import iter_tensors
    from .torch_interop import tensor_to_raw
    meta, it = iter_tensors(Path(path))
    out = {}
    for name, t in it:
        dtype, shape, raw = tensor_to_raw(name, t)
        out[name] = (dtype, tuple(shape), np.frombuffer(bytes(memoryview(raw).cast("B")),
                                                        dtype=np.uint8))
    return out, meta


class Archive:
    """A checkpoint archive folder. `add` appends a checkpoint; `decode` returns one."""

    def __init__(self, folder, *, create: bool = False, keyframe_every: int | None = None):
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                self.manifest = json.load(f)
            if self.manifest.get("schema") != SCHEMA:
                raise UsageError(f"{self.path}: not a {SCHEMA} manifest")
            if keyframe_every is not None:
                self.manifest["keyframe_every"] = _check_k(keyframe_every)
        elif create:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.manifest = {"schema": SCHEMA, "keyframe_every": _check_k(
                keyframe_every or DEFAULT_KEYFRAME_EVERY), "checkpoints": []}
        else:
            raise UsageError(f"{self.folder}: no {MANIFEST} (not a checkpoint archive)")
        self._last = None  # (sha256 hex, {name: decoded bytes}) of the newest checkpoint

    # -- manifest ---------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> list[dict]:
        return self.manifest["checkpoints"]

    def entry(self, name: str) -> dict:
        for e in self.checkpoints:
            if e["name"] == name:
                return e
        raise UsageError(f"{self.folder}: no checkpoint named {name!r} "
                         f"(have: {', '.join(e['name'] for e in self.checkpoints) or 'none'})")

    def _save(self) -> None:
        with AtomicFile(self.path) as out:
            out.write(json.dumps(self.manifest, indent=1).encode("utf-8") + b"\n")

    # -- add --------------------------------------------------------------------------------------
    def add(self, tensors: dict, name: str, *, keyframe: bool | None = None,
            lossy_step: float | None = None, lossy: LossyControl | None = None,
            options: EncodeOptions = EncodeOptions(),
            metadata: dict | None = None, progress=None) -> dict:
        """Append checkpoint `name`: `tensors` maps tensor name -> (DType, shape, bytes).
        `lossy` (archive_lossy.LossyControl: a fixed relative step or a quality target that the
        step is searched for) quantizes the float tensors' residuals against the decoded
        predecessor; `lossy_step` is short for LossyControl(step=lossy_step). Keyframes are
        always lossless."""
        if lossy is None and lossy_step:
            lossy = LossyControl(step=lossy_step)
        if any(e["name"] == name for e in self.checkpoints):
            raise UsageError(f"checkpoint {name!r} is already in {self.folder}")
        file = name + ".wcodec"
        if os.sep in name or "/" in name or name in (".", ".."):
            raise UsageError(f"checkpoint name {name!r} must be a plain file name")
        k = self.manifest["keyframe_every"]
        parent = self.checkpoints[-1] if self.checkpoints else None
        since = _since_keyframe(self.checkpoints)
        if keyframe is None:
            keyframe = parent is None or since + 1 >= k
        if parent is None:
            keyframe = True
        ref_state, parent_sha = {}, None
        if not keyframe:
            parent_sha = bytes.fromhex(parent["sha256"])
            ref_state = self._decoded(parent)
        decay = None
        if ref_state:
            big = max((n for n in tensors if n in ref_state), default=None,
                      key=lambda n: tensors[n][2].size)
            if big is not None:
                dt, shape, raw = tensors[big]
                if dt.name in FLOAT_DTYPES and ref_state[big][0] == dt:
                    decay = fit_decay(raw.view(dt.uint), ref_state[big][2].view(dt.uint), dt)
        target = self.folder / file
        stats = dict(intra_bytes=0, predicted=0, plain=0, raw_bytes=0)
        decoded = {}
        hint = parent["file"] if parent else ""

        def reference_of(tname):
            return Reference(tname, parent_sha, hint)
        elems, refs = {}, {}
        for tname, (dtype, shape, raw) in tensors.items():
            elems[tname] = (dtype, tuple(shape),
                            np.asarray(raw).reshape(-1).view(np.uint8).view(dtype.uint))
            if tname in ref_state and ref_state[tname][0] == dtype and \
                    tuple(ref_state[tname][1]) == tuple(shape):
                refs[tname] = ref_state[tname][2].view(dtype.uint)
        search, rel = None, None
        if lossy is not None and not keyframe:
            # vectors (biases, LayerNorm gains) get a finer step (vector_factor): a step relative
            # to a LayerNorm gain's RMS (~1) would erase every update
            lossy_refs = {n: r for n, r in refs.items() if lossy_eligible(*elems[n][:2])}
            preds = {n: dict(predictor="scalar", a=decay[0], repeat=decay[1]) if decay
                     else dict(predictor="identity") for n in lossy_refs}
            prev_rel = parent.get("lossy_rel_step") \
                if parent.get("rounding") == lossy.rounding else None
            search = StepSearch(lossy, elems, lossy_refs, preds, parent_sha, options,
                                reference_of, prev_rel,
                                self._steps(parent) if prev_rel is not None else None)
            rel = search.run(prev_rel) if lossy.searched else lossy.step
            # level streams are mostly zero bytes: large chunks and no alignment padding cost
            # less framing (about 1 % of a lossy checkpoint); neither changes what is decoded
            options = dataclasses.replace(options, alignment_log2=0,
                                          chunk_elements=max(options.chunk_elements, 1 << 22))
        pool = ThreadPoolExecutor(max_workers=options.threads or 2)
        try:
            with Writer(target, metadata=metadata, options=options) as w:
                for tname, (dtype, shape, elements) in elems.items():
                    stats["raw_bytes"] += elements.nbytes
                    ref = refs.get(tname)
                    q = search.kwargs(tname, rel) if search is not None and \
                        tname in search.refs else None
                    c = choose(tname, dtype, shape, elements, ref, reference_of(tname),
                               options, decay=decay, quantized=q, pool=pool)
                    stats["intra_bytes"] += c.intra_size
                    stats["predicted" if c.kind is not Plain else "plain"] += 1
                    w.add(tname, dtype, shape, elements, kind=c.kind, **c.options)
                    if c.record is not None and c.record.decoded is not None:
                        decoded[tname] = (dtype, tuple(shape), c.record.decoded)
                    else:
                        decoded[tname] = (dtype, tuple(shape), elements.view(np.uint8))
                    if progress:
                        progress(elements.nbytes)
        finally:
            pool.shutdown()
        sha = file_sha256(target)
        entry = dict(name=name, file=file, sha256=sha.hex(),
                     parent=None if keyframe else parent["sha256"],
                     parent_name=None if keyframe else parent["name"], keyframe=bool(keyframe),
                     lossy=search is not None, bytes=os.path.getsize(target),
                     raw_bytes=stats["raw_bytes"], intra_bytes=stats["intra_bytes"],
                     tensors=len(tensors), predicted_tensors=stats["predicted"],
                     decay=list(decay) if decay else None, added=_now())
        if search is not None:
            entry.update(lossy_rel_step=rel, rounding=lossy.rounding,
                         vector_factor=lossy.vector_factor,
                         search=[[r, q] for r, q in search.trace] or None)
        self.checkpoints.append(entry)
        self._save()
        self._last = (entry["sha256"], decoded)
        return entry

    def _steps(self, entry: dict) -> dict:
        """The exact steps of a lossy checkpoint's quantized records (from its index)."""
        with Reader(self.folder / entry["file"]) as r:
            return parent_steps(r)

    def _decoded(self, entry: dict) -> dict:
        if self._last is not None and self._last[0] == entry["sha256"]:
            return self._last[1]
        return self.read(entry["name"])

    # -- read -------------------------------------------------------------------------------------
    def reader(self, name: str, **reader_kw) -> Reader:
        e = self.entry(name)
        return open_reader(self.folder / e["file"], [self.folder], **reader_kw)

    def read(self, name: str, **reader_kw) -> dict:
        return read_all(self.folder / self.entry(name)["file"], [self.folder], **reader_kw)

    def decode_to(self, name: str, out, **reader_kw) -> dict:
        """Decode checkpoint `name` to a safetensors file, bit for bit."""
        from .safetensors_io import write_safetensors
        r = self.reader(name, **reader_kw)
        try:
            entries = [(n, r.info(n).dtype, r.info(n).shape) for n in r.keys()]
            meta = {k: v for k, v in r.metadata().items()
                    if not k.startswith("wcodec.") and isinstance(v, str)}
            write_safetensors(out, entries, meta, r.read_bytes)
            return dict(name=name, output=str(out), tensors=len(entries))
        finally:
            r.parent_resolver.close()
            r.close()

    def chain(self, name: str) -> list[dict]:
        """The checkpoint chain from `name` back to its keyframe, following parent hashes."""
        by_sha = {e["sha256"]: e for e in self.checkpoints}
        out, e = [], self.entry(name)
        while e is not None and len(out) <= MAX_DEPTH + 1:
            out.append(e)
            e = by_sha.get(e["parent"]) if e["parent"] else None
        return out

    def verify(self) -> list[dict]:
        """Every file present with the manifest's SHA-256, and every parent hash known."""
        problems = []
        shas = {e["sha256"] for e in self.checkpoints}
        for e in self.checkpoints:
            p = self.folder / e["file"]
            if not p.exists():
                problems.append(dict(name=e["name"], problem="missing file"))
            elif file_sha256(p).hex() != e["sha256"]:
                problems.append(dict(name=e["name"], problem="file changed (SHA-256 differs)"))
            if e["parent"] and e["parent"] not in shas:
                problems.append(dict(name=e["name"], problem="parent not in the archive"))
        return problems


def _check_k(k: int) -> int:
    if not 1 <= int(k) <= MAX_DEPTH:
        raise UsageError(f"keyframe interval must be 1..{MAX_DEPTH} (the reference depth limit)")
    return int(k)


def _since_keyframe(entries: list[dict]) -> int:
    n = 0
    for e in reversed(entries):
        if e["keyframe"]:
            return n
        n += 1
    return n


def file_chain(path, search=None) -> list[dict]:
    """For `inspect`: per predicted tensor of a file, its reference chain as (file, tensor)."""
    r = open_reader(path, search)
    try:
        out = []
        for n in r.keys():
            info = r.info(n)
            if info.record_kind != KIND_ID:
                continue
            try:
                ch = reference_chain(r, n)
                out.append(dict(tensor=n, chain=[dict(file=os.path.basename(x.path), tensor=t)
                                                 for x, t in ch]))
            except Exception as e:  # noqa: BLE001 - reported, not raised
                out.append(dict(tensor=n, error=f"{type(e).__name__}: {e}"))
        return out
    finally:
        r.parent_resolver.close()
        r.close()


__all__ = ["Archive", "open_reader", "read_all", "load_weights", "file_chain", "MANIFEST",
           "PredParams", "hashlib"]
