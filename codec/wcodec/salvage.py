"""Salvage (spec/container.md §13, informative): find every damaged block and tensor of a file and
recover every tensor that is still intact, even when the footer or the index is damaged.

A strict open (wcodec.reader.Reader) stops at the first error. `SalvageReader` first tries it;
if it fails, it walks the block stream from the header (every block carries its own length and
CRC32C, §4), takes the last INDEX block found, and checks tensor records one at a time, so one bad
record costs only its own tensor. A tensor is *recovered* only when all of its blocks pass their
checks and its decoded bytes match its SHA-256; when the INDEX block itself fails its CRC32C the
records are parsed anyway, and then only tensors that carry a SHA-256 can be recovered.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import construct
import crc32c

from . import layout as L
from .errors import FormatError, LayoutError, UsageError
from .limits import MAX_ALIGNMENT_LOG2
from .reader import Reader, _BLOCK_ENTRY_C, _BLOCK_HEADER_C, _HEADER_C, _tensor_of

_TYPE_PATTERNS = (L.BLOCK_CHUNK.to_bytes(2, "little") + b"\0\0",
                  L.BLOCK_INDEX.to_bytes(2, "little") + b"\0\0")


@dataclass
class FoundBlock:
    """A block met by the walk. `ok`: its CRC32C matched (so its header can be trusted)."""

    offset: int
    block_type: int
    tensor_id: int
    stream_id: int
    chunk_id: int
    payload_length: int
    ok: bool

    @property
    def end(self) -> int:
        return self.offset + L.BLOCK_OVERHEAD + self.payload_length


def _candidate(data, size: int, pos: int) -> FoundBlock | None:
    if pos + L.BLOCK_OVERHEAD > size:
        return None
    h = _BLOCK_HEADER_C.parse(bytes(data[pos:pos + L.BLOCK_HEADER_SIZE]))
    if h.block_type not in L.KNOWN_BLOCK_TYPES or h.block_flags:
        return None
    ids = (h.tensor_id, h.stream_id, h.chunk_id)
    if (h.block_type == L.BLOCK_INDEX) != (ids == (L.NONE_ID,) * 3):
        return None
    if h.payload_length > size - pos - L.BLOCK_OVERHEAD:
        return None
    end = pos + L.BLOCK_HEADER_SIZE + h.payload_length
    ok = crc32c.crc32c(data[pos:end]) == int.from_bytes(data[end:end + 4], "little")
    return FoundBlock(pos, h.block_type, *ids, h.payload_length, ok)


def walk_blocks(data, size: int, alignment: int = 1) -> list[FoundBlock]:
    """§13.1: the blocks between the header and the end of the file, found by their own headers.

    From p = align_up(32, A): a block whose CRC32C matches is taken and the walk jumps to
    align_up(its end, A). Otherwise the walk moves to the next candidate: the next offset (a
    multiple of A) holding a CHUNK or INDEX block_type with zero block_flags, ids that fit the
    type, and a payload_length that fits the file. A candidate whose CRC fails is reported as
    damaged; the walk jumps over it only if its declared end is followed by another candidate
    that checks out (or by the end of the file), else it resumes the search one position on."""
    out: list[FoundBlock] = []
    pos = L.align_up(L.HEADER_SIZE, alignment)
    while pos + L.BLOCK_OVERHEAD <= size:
        c = _candidate(data, size, pos)
        if c is None:
            pos = _next_candidate(data, size, pos + 1, alignment)
            continue
        if c.ok:
            out.append(c)
            pos = L.align_up(c.end, alignment)
            continue
        out.append(c)
        nxt = L.align_up(c.end, alignment)
        follow = _candidate(data, size, nxt)
        if (follow is not None and follow.ok) or nxt >= size - L.FOOTER_SIZE:
            pos = nxt
        else:
            pos = _next_candidate(data, size, pos + 1, alignment)
    return out


def _next_candidate(data, size: int, start: int, alignment: int) -> int:
    """Smallest offset ≥ start, a multiple of `alignment`, where a CHUNK or INDEX type with zero
    flags begins (size if none): found with bytes.find, so a long damaged stretch costs little."""
    buf = data.obj if isinstance(data, memoryview) else data
    pos = start
    while pos < size:
        hits = [i for i in (buf.find(p, pos) for p in _TYPE_PATTERNS) if i >= 0]
        if not hits:
            return size
        i = min(hits)
        if i % alignment == 0:
            return i
        pos = i + 1
    return size


def _problem(e: FormatError, **extra) -> dict:
    d = dict(block=e.block, tensor=e.tensor, error=e.error_class, rule=e.rule, message=str(e))
    d.update(extra)
    return d


class SalvageReader(Reader):
    """A Reader that survives a damaged footer, index or record. After opening:

    - `index_state`: "intact" (the strict open succeeded), "walked" (the footer or a record was
      bad; an intact INDEX block was found), "damaged" (only an INDEX block failing its CRC32C was
      found; records are trusted only through their SHA-256), or "missing" (no INDEX block);
    - `open_problems`: what went wrong before any tensor was read (the strict open's error first);
    - `lost_records`: problems of tensor records that could not be checked or parsed;
    - `found`: the walk's blocks (empty when the strict open succeeded)."""

    def _open(self) -> None:
        self.open_problems: list[dict] = []
        self.lost_records: list[dict] = []
        self.found: list[FoundBlock] = []
        self.index_state = "intact"
        self.tensors, self.blocks, self._owner, self._metadata = {}, [], {}, {}
        try:
            super()._open()
            return
        except FormatError as e:
            self.open_problems.append(_problem(e))
        self.tensors, self.blocks, self._owner, self._metadata = {}, [], {}, {}
        data, size = self.data, self.file_size
        self.alignment = 1
        if size >= L.HEADER_SIZE and bytes(data[:8]) == L.MAGIC:
            h = _HEADER_C.parse(bytes(data[:L.HEADER_SIZE]))
            if (crc32c.crc32c(data[:28]) == h.header_crc32c
                    and h.alignment_log2 <= MAX_ALIGNMENT_LOG2):
                self.alignment = 1 << h.alignment_log2
        self.found = walk_blocks(data, size, self.alignment)
        for f in self.found:
            if not f.ok:
                ids = "" if f.block_type == L.BLOCK_INDEX else \
                    f" (claims tensor {f.tensor_id}, stream {f.stream_id}, chunk {f.chunk_id})"
                self.open_problems.append(dict(
                    block=None, tensor=None, offset=f.offset, error="ChecksumMismatch",
                    rule="BLK-01", message=f"[BLK-01] {L.KNOWN_BLOCK_TYPES[f.block_type]} block "
                    f"at offset {f.offset} fails its CRC32C{ids}"))
        index = [f for f in self.found if f.block_type == L.BLOCK_INDEX]
        good = [f for f in index if f.ok]
        if not index:
            self.index_state = "missing"
            self.open_problems.append(dict(
                block=None, tensor=None, error="Truncated", rule="FTR-01",
                message="no INDEX block found by walking the blocks: tensor names, shapes and "
                        "codecs are lost, nothing can be recovered"))
            return
        f = (good or index)[-1]
        self.index_state = "walked" if f.ok else "damaged"
        self.index_offset = f.offset
        p0 = f.offset + L.BLOCK_HEADER_SIZE
        payload = bytes(data[p0:p0 + f.payload_length])
        if f.payload_length > self.limits.max_index_bytes:
            self.index_state = "missing"
            self.open_problems.append(dict(
                block=None, tensor=None, error="LimitExceeded", rule="LIM-02",
                message=f"INDEX block of {f.payload_length} bytes exceeds the limit"))
            return
        self._salvage_index(payload)

    def _salvage_index(self, payload: bytes) -> None:
        try:
            self._parse_index(payload)
            records = self._raw_records
        except FormatError as e:
            self.open_problems.append(_problem(e))
            records = self._parse_index_prefix(payload)
        owner: dict = {}
        for t, r in enumerate(records):
            try:
                info = self._check_record(t, r, owner)
            except FormatError as e:
                name = _safe_name(r)
                self.lost_records.append(_problem(e, tensor=e.tensor or name))
                continue
            self.tensors[info.name] = info
        self._owner = owner

    def _parse_index_prefix(self, payload: bytes) -> list:
        """The index parsed as far as it goes: block entries that fit, then metadata entries
        and tensor records one at a time until one does not parse."""
        lim = self.limits
        try:
            ih = L.IndexHeader.parse(payload[:L.INDEX_HEADER_SIZE])
        except construct.ConstructError:
            return []
        nb = min(ih.block_count, lim.max_blocks,
                 (len(payload) - L.INDEX_HEADER_SIZE) // L.BLOCK_ENTRY_SIZE,
                 max(0, self.index_offset - L.HEADER_SIZE) // L.BLOCK_OVERHEAD)
        pos = L.INDEX_HEADER_SIZE
        self.blocks = [_BLOCK_ENTRY_C.parse(payload[pos + i * 24:pos + i * 24 + 24])
                       for i in range(nb)]
        stream = io.BytesIO(payload)
        stream.seek(pos + nb * L.BLOCK_ENTRY_SIZE)
        records = []
        try:
            for _ in range(min(ih.metadata_count, lim.max_metadata_entries)):
                L.MetadataEntry.parse_stream(stream)
            for _ in range(min(ih.tensor_count, lim.max_tensors)):
                records.append(L.TensorRecord.parse_stream(stream))
        except (construct.ConstructError, ValueError, OverflowError, MemoryError):
            pass
        return records

    def block_payload(self, b, expect):
        e = self.blocks[b]
        if e.offset + L.BLOCK_OVERHEAD + e.payload_length > self.file_size:
            raise LayoutError("block lies outside the file", rule="LAY-04", block=b)
        return super().block_payload(b, expect)

    def read_bytes(self, name, *, verify_sha256=None, **options):
        info = self.info(name)
        if self.index_state == "damaged" and info.sha256 is None:
            raise LayoutError("the INDEX block is damaged and this tensor has no SHA-256 to "
                              "confirm it", rule="IDX-02", tensor=name)
        if self.index_state == "damaged":
            verify_sha256 = True
        return super().read_bytes(name, verify_sha256=verify_sha256, **options)


def _safe_name(r) -> str | None:
    try:
        return bytes(r.name).decode("utf-8")
    except (UnicodeDecodeError, AttributeError, TypeError):
        return None


@dataclass
class SalvageReport:
    file: str
    index: str
    problems: list = field(default_factory=list)
    recovered: list = field(default_factory=list)
    lost: list = field(default_factory=list)
    blocks_found: int | None = None

    @property
    def intact(self) -> bool:
        return not self.problems

    def as_json(self) -> dict:
        return {"schema": "wcodec.salvage/1", "file": self.file, "index": self.index,
                "intact": self.intact, "recovered": self.recovered, "lost": self.lost,
                "problems": self.problems, "blocks_found": self.blocks_found}


def examine(r: SalvageReader, names=None) -> SalvageReport:
    """Every damaged block and tensor of an open SalvageReader, in file order: the open's
    problems, then each block of the table that fails its checks, then each tensor that does
    not decode to its SHA-256 (tensors whose blocks are bad are lost without decoding)."""
    rep = SalvageReport(file=r.path, index=r.index_state,
                        blocks_found=len(r.found) if r.found else None)
    # a damaged block the walk met and the block table also lists is reported once, by the table
    listed = {e.offset for e in r.blocks} | {getattr(r, "index_offset", None)} \
        if r.index_state != "missing" else set()
    rep.problems.extend(p for p in r.open_problems if p.get("offset") not in listed)
    bad_blocks = {}
    if r.index_state != "missing":
        for b in range(len(r.blocks)):  # every block, optional ones too (BLK-01: verify reads all)
            try:
                r.block_payload(b, r._owner.get(b))
            except FormatError as e:
                p = _problem(e, tensor=_tensor_of(r, b))
                bad_blocks[b] = p
                rep.problems.append(p)
    lost = {p["tensor"]: p for p in r.lost_records if p.get("tensor") is not None}
    unnamed = [p for p in r.lost_records if p.get("tensor") is None]
    rep.problems.extend(r.lost_records)
    for name, info in r.tensors.items():
        if names is not None and name not in names:
            continue
        blocks = [b for s in info.streams for b in s.chunk_blocks]
        hit = next((bad_blocks[b] for b in blocks if b in bad_blocks), None)
        if hit is not None:
            lost[name] = dict(hit, tensor=name)
            continue
        try:
            r.read_bytes(name, verify_sha256=True)
        except FormatError as e:
            p = _problem(e, tensor=name)
            lost[name] = p
            rep.problems.append(p)
            continue
        rep.recovered.append(name)
    rep.lost = list(lost.values()) + unnamed
    seen, unique = set(), []
    for p in rep.problems:  # the strict open and the salvage pass may meet the same error
        key = (p.get("block"), p.get("tensor"), p.get("offset"), p["error"], p["message"])
        if key not in seen:
            seen.add(key)
            unique.append(p)
    rep.problems = unique
    return rep


def salvage_file(src, dst, *, patterns=None, reader_kw=None, progress=None) -> SalvageReport:
    """Decode every intact tensor of `src` (matching `patterns`) to the safetensors file `dst`
    (written atomically) and report the lost ones. `dst` is written whenever the index could be
    read, even if every tensor is lost (an empty safetensors file then); not when it could not."""
    from .safetensors_io import write_safetensors
    with SalvageReader(src, **(reader_kw or {})) as r:
        names = [n for n in r.keys() if not patterns or any(fnmatchcase(n, p) for p in patterns)]
        if patterns and not names and r.index_state in ("intact", "walked"):
            raise UsageError(f"{src}: no tensor matches {list(patterns)}")
        rep = examine(r, set(names))
        if patterns:
            rep.lost = [p for p in rep.lost
                        if p.get("tensor") is None or any(fnmatchcase(p["tensor"], q)
                                                          for q in patterns)]
        if r.index_state == "missing":
            return rep
        keep = [n for n in names if n in set(rep.recovered)]
        entries = [(n, r.info(n).dtype, r.info(n).shape) for n in keep]
        meta = {k: v for k, v in r.metadata().items()
                if not k.startswith("wcodec.") and isinstance(v, str)}

        def produce(name):
            data = r.read_bytes(name, verify_sha256=True)
            if progress:
                progress(data.size)
            return data
        write_safetensors(dst, entries, meta, produce)
    return rep


def verify_report(path, *, limits=None) -> tuple[list[dict], int | None, int | None, str]:
    """(problems, tensors, blocks, index state) for `wcodec verify`: every damaged block and
    tensor, the first problem being the one a strict decoder reports."""
    kw = {} if limits is None else {"limits": limits}
    with SalvageReader(path, verify_sha256=True, **kw) as r:
        rep = examine(r)
        n_t = len(r.tensors) + len(r.lost_records) if r.index_state != "missing" else None
        n_b = len(r.blocks) if r.index_state != "missing" else None
        return rep.problems, n_t, n_b, r.index_state


__all__ = ["SalvageReader", "SalvageReport", "walk_blocks", "examine", "salvage_file",
           "verify_report", "FoundBlock"]
