"""`wcodec encode --predict-layers`: lossless coding of one model with layer-to-layer prediction
(issue 9, spec/records/predicted.md §10). Encoder-only: the files are ordinary wcodec files whose
`predicted` records name a tensor of the same file (`source` 1).

1. Runs of same-shaped layers: a tensor name with a number in it (`encoder.layer.3.attention.
   self.query.weight`, `_blocks.7._bn0.weight`) belongs to layer 3 (7) of the family named by the
   rest of the name; layer l of a family is the candidate reference of layer l + 1 when both have
   the same dtype and shape.
2. FFN alignment: within a layer, a size H that is the first dimension of exactly one matrix (the
   FFN's first layer, plus any vectors of length H) and the last dimension of exactly one other
   matrix (the FFN's second layer) is a hidden width whose units may be permuted without
   changing the function. Layer l's units are matched to layer l + 1's by an assignment solver
   (scipy.optimize.linear_sum_assignment on the cosine similarity of each unit's incoming row and
   outgoing column); the permutation is stored with each predicted record (rows for the first
   layer and its vectors, columns for the second). Without scipy there is no alignment.
3. Per tensor, intra (`plain`) and every candidate (identity or least-squares scalar affine, with
   and without the permutation, `sub` residual) are coded and the smallest is kept, so no record
   is larger than intra coding would make it; reference chains stay within PRD-09's 16.

docs/predicted.md reports what this saves on all-MiniLM-L6-v2 and EfficientNet-lite0.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from .records.plain import Plain
from .records.predicted import FLOAT_DTYPES, MAX_DEPTH, Reference, to_float64
from .records.predicted_encoder import choose
from .writer import Writer

_NUM = re.compile(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)")


def family(name: str):
    """(family key, layer index) from the first dotted number component; None without one."""
    m = _NUM.search(name)
    if not m:
        return None
    return name[:m.start()] + "{}" + name[m.end():], int(m.group())


def plan_references(entries: dict) -> dict:
    """name -> name of its reference (the same tensor of the previous layer), for every tensor
    with a same-dtype, same-shape predecessor. `entries`: name -> (dtype, shape)."""
    fams = {}
    for n in entries:
        f = family(n)
        if f:
            fams[f] = n
    refs = {}
    for (key, idx), n in fams.items():
        prev = fams.get((key, idx - 1))
        if prev is not None and entries[prev][0] == entries[n][0] and \
                tuple(entries[prev][1]) == tuple(entries[n][1]):
            refs[n] = prev
    return refs


def hidden_groups(entries: dict) -> dict:
    """layer key -> list of (H, rows tensors, cols tensors): FFN hidden widths of each layer
    (module docstring, step 2). The layer key is (family prefix, index)."""
    by_layer = defaultdict(list)
    for n, (dt, shape) in entries.items():
        m = _NUM.search(n)
        if m and dt.name in FLOAT_DTYPES:
            by_layer[(n[:m.start()], int(m.group()))].append(n)
    out = {}
    for layer, names in by_layer.items():
        mats = [n for n in names if len(entries[n][1]) == 2]
        groups = []
        for h in {entries[n][1][0] for n in mats}:
            first = [n for n in mats if entries[n][1][0] == h]
            last = [n for n in mats if entries[n][1][-1] == h and entries[n][1][0] != h]
            if len(first) == 1 and len(last) == 1:
                vecs = [n for n in names if tuple(entries[n][1]) == (h,)]
                groups.append((h, first + vecs, last))
        if groups:
            out[layer] = groups
    return out


def _unit_features(tensors, rows0, cols0) -> np.ndarray:
    parts = []
    for n, axis in ((rows0, 0), (cols0, 1)):
        dt, shape, el = tensors[n]
        a = to_float64(el, dt).reshape(shape)
        a = a if axis == 0 else a.T
        parts.append(a / (np.linalg.norm(a) + 1e-30))
    f = np.concatenate(parts, axis=1)
    return f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-30)


def align(tensors, rows_a, cols_a, rows_b, cols_b) -> np.ndarray | None:
    """perm with layer B's unit i matched to layer A's unit perm[i]; None without scipy."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        return None
    fa = _unit_features(tensors, rows_a, cols_a)
    fb = _unit_features(tensors, rows_b, cols_b)
    _, perm = linear_sum_assignment(-(fb @ fa.T))
    return perm.astype(np.int64)


def permutations(tensors: dict, refs: dict) -> dict:
    """name -> (axis 'rows'/'columns', perm) for tensors of an aligned FFN whose reference is
    the same tensor of the previous layer."""
    entries = {n: (dt, shape) for n, (dt, shape, _) in tensors.items()}
    groups = hidden_groups(entries)
    out = {}
    for (prefix, idx), gs in groups.items():
        prev = groups.get((prefix, idx - 1))
        if not prev:
            continue
        for h, rows, cols in gs:
            match = [g for g in prev if g[0] == h and len(g[1]) == len(rows)]
            if not match:
                continue
            _, prows, pcols = match[0]
            if refs.get(rows[0]) != prows[0] or refs.get(cols[0]) != pcols[0]:
                continue
            perm = align(tensors, prows[0], pcols[0], rows[0], cols[0])
            if perm is None:
                continue
            for n in rows:
                if n in refs:
                    out[n] = ("rows", perm)
            out[cols[0]] = ("columns", perm)
    return out


def _affine(x, ref, dt):
    """Least-squares scalar a for x ≈ a·ref (binary32)."""
    xf, rf = to_float64(x, dt), to_float64(ref, dt)
    ok = np.isfinite(xf) & np.isfinite(rf)
    d = float(np.dot(rf[ok], rf[ok]))
    a = float(np.dot(xf[ok], rf[ok])) / d if d > 0 else 1.0
    return float(np.float32(a)) if np.isfinite(a) and a != 0 else None


def candidates(dt, shape, x, ref, perm) -> list[dict]:
    """Predicted.encode options to try besides identity without a permutation (choose() adds
    that one itself)."""
    out = []
    is_float = dt.name in FLOAT_DTYPES
    if is_float:
        a = _affine(x, ref, dt)
        if a is not None:
            out.append(dict(predictor="scalar", a=a, repeat=1, residual="sub"))
    if perm is not None:
        axis, p = perm
        out.append(dict(predictor="identity", permutation=axis, perm=p, residual="sub"))
        if is_float:
            flat = ref.reshape(shape)
            pr = (flat[p] if axis == "rows" else flat[..., p]).reshape(-1)
            a = _affine(x, pr, dt)
            if a is not None:
                out.append(dict(predictor="scalar", a=a, repeat=1, permutation=axis, perm=p,
                                residual="sub"))
    return out


def encode_file_layers(src: Path, dst: Path, options, progress=None) -> dict:
    """Encode `src` losslessly with layer-to-layer prediction; returns a summary."""
    from .formats import iter_tensors, source_format
    from .metadata import KEY_SOURCE_FILE, KEY_SOURCE_FORMAT
    from .torch_interop import tensor_to_raw
    meta, it = iter_tensors(Path(src))
    tensors = {}
    for name, t in it:
        dt, shape, raw = tensor_to_raw(name, t)
        tensors[name] = (dt, tuple(shape), np.frombuffer(bytes(memoryview(raw).cast("B")),
                                                         dtype=np.uint8).view(dt.uint))
    refs = plan_references({n: (dt, s) for n, (dt, s, _) in tensors.items()})
    perms = permutations(tensors, refs)
    # decide in layer order (a reference before the tensors that name it, so the chain depth is
    # known), write in the source's order (decoding restores it exactly)
    order = sorted(tensors, key=lambda n: family(n)[1] if family(n) else -1)
    depth: dict[str, int] = {}
    choices = {}
    stats = dict(tensors=len(tensors), predicted=0, permuted=0, intra_bytes=0, chosen_bytes=0)
    for name in order:
        dt, shape, el = tensors[name]
        rname = refs.get(name)
        if rname is not None and depth.get(rname, MAX_DEPTH) + 1 > MAX_DEPTH:
            rname = None   # PRD-09: no chain of more than 16 predicted records
        ref = tensors[rname][2] if rname is not None else None
        c = choose(name, dt, shape, el, ref, Reference(rname or name), options,
                   extra=candidates(dt, shape, el, ref, perms.get(name))
                   if ref is not None else None)
        choices[name] = c
        depth[name] = 0 if c.kind is Plain else depth[rname] + 1
        stats["intra_bytes"] += c.intra_size
        stats["chosen_bytes"] += c.size
        if c.kind is not Plain:
            stats["predicted"] += 1
            stats["permuted"] += int(c.options.get("permutation", "none") != "none")
    system = {KEY_SOURCE_FORMAT: source_format(Path(src)), KEY_SOURCE_FILE: Path(src).name}
    with Writer(dst, metadata=meta, system_metadata=system, options=options) as w:
        for name, (dt, shape, el) in tensors.items():
            c = choices[name]
            w.add(name, dt, shape, el, kind=c.kind, **c.options)
            if progress:
                progress(el.nbytes)
    return dict(source=str(src), output=str(dst), **stats)


__all__ = ["encode_file_layers", "plan_references", "hidden_groups", "permutations", "family"]
