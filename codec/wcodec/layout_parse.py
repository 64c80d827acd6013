"""Fast parsers generated from layout.py's construct declarations, for opening a file.

layout.py stays the one description of the bytes (it mirrors the spec's tables). construct's own
compiled parsers build a context Container per structure and read field by field from a stream,
which made parsing the INDEX of a model of a hundred tensors a third of the time to open it. The
generator here walks the same declarations and emits one Python function per structure that
unpacks from the payload bytes by position: runs of fixed-size fields in one struct.unpack_from,
arrays of numbers in one call, every read checked against the end of the payload.

It is a fast path only. It yields the same Containers as construct on every input construct
parses, and raises (any exception) on every input construct cannot parse to the end; the reader
then parses again with the declarative structs, which name the error. A declaration it does not
know raises NotImplementedError when the parser is generated, so a change of layout.py cannot
change what is parsed silently (tests/test_layout_parse.py compares both on valid and hostile
indexes).
"""

from __future__ import annotations

import struct

import construct
import numpy as np
from construct import Container, ListContainer

__all__ = ["generate", "numpy_dtype"]

# struct codes with standard sizes ('<' prefix) -> numpy kinds
_NP_KIND = {"B": "u", "H": "u", "L": "u", "I": "u", "Q": "u",
            "b": "i", "h": "i", "l": "i", "i": "i", "q": "i", "d": "f", "f": "f"}


def _field_code(sub) -> str:
    """The struct code of a little-endian FormatField ('<H' -> 'H')."""
    fmt = sub.fmtstr
    if len(fmt) != 2 or fmt[0] != "<" or fmt[1] not in _NP_KIND:
        raise NotImplementedError(f"format field {fmt!r}")
    return fmt[1]


def numpy_dtype(struct_: construct.Struct) -> np.dtype:
    """A packed numpy record dtype for a Struct of fixed-size numbers only (the block table)."""
    fields = []
    for sc in struct_.subcons:
        inner = sc.subcon if isinstance(sc, construct.Renamed) else None
        if sc.name is None or not isinstance(inner, construct.FormatField):
            raise NotImplementedError(f"{sc!r} in a numpy record")
        code = _field_code(inner)
        fields.append((sc.name, f"<{_NP_KIND[code]}{struct.calcsize('<' + code)}"))
    dt = np.dtype(fields)
    if dt.itemsize != struct_.sizeof():
        raise NotImplementedError("numpy record size differs from the struct's")
    return dt


# arrays of up to this many numbers keep their Struct (a hostile index cannot grow the cache)
_CACHED_LENGTHS = 64


class _Gen:
    def __init__(self):
        self.ns = {"Container": Container, "ListContainer": ListContainer,
                   "Struct": struct.Struct, "len": len, "range": range}
        self.funcs: dict[int, str] = {}  # id(struct) -> function name
        self.src: list[str] = []
        self.n = 0

    def const(self, value, stem: str) -> str:
        self.n += 1
        name = f"_{stem}{self.n}"
        self.ns[name] = value
        return name

    @staticmethod
    def expr(e) -> str:
        """A count or length: an int, or a construct expression of this (and this._)."""
        if isinstance(e, int):
            return repr(e)
        if not isinstance(e, construct.expr.ExprMixin):
            raise NotImplementedError(f"expression {e!r}")
        s = repr(e).replace("this['_']", "parent")
        if "['_" in s or "this." in s or "parent." in s:  # _root, _params, _index, methods
            raise NotImplementedError(f"expression {e!r}")
        return s

    def struct_func(self, st: construct.Struct) -> str:
        if id(st) in self.funcs:
            return self.funcs[id(st)]
        name = f"parse_{len(self.funcs)}"
        self.funcs[id(st)] = name
        body = ["    this = Container()"]
        run: list[tuple[str, str]] = []  # consecutive number fields, read in one call

        def flush():
            if not run:
                return
            fmt = "<" + "".join(c for _, c in run)
            s = self.const(struct.Struct(fmt), "S")
            targets = "".join(f"this[{n!r}], " for n, _ in run)
            body.append(f"    {targets}= {s}.unpack_from(buf, pos)")
            body.append(f"    pos += {struct.calcsize(fmt)}")
            run.clear()

        for sc in st.subcons:
            if sc.name is None or not isinstance(sc, construct.Renamed):
                raise NotImplementedError(f"unnamed field {sc!r}")
            inner = sc.subcon
            if isinstance(inner, construct.FormatField):
                run.append((sc.name, _field_code(inner)))
                continue
            flush()
            body += self.value(inner, f"this[{sc.name!r}]", "    ")
        flush()
        body.append("    return this, pos")
        self.src.append(f"def {name}(buf, pos, end, parent):\n" + "\n".join(body) + "\n")
        return name

    def value(self, sub, target: str, ind: str) -> list[str]:
        """Lines that parse `sub` at buf[pos:] into `target` and advance pos."""
        while isinstance(sub, (construct.Default, construct.Renamed)):
            sub = sub.subcon  # Default only matters when building
        if isinstance(sub, construct.FormatField):
            s = self.const(struct.Struct(sub.fmtstr), "S")
            return [f"{ind}{target}, = {s}.unpack_from(buf, pos)", f"{ind}pos += {sub.length}"]
        if isinstance(sub, construct.Bytes):
            return [f"{ind}e = pos + {self.expr(sub.length)}",
                    f"{ind}if e > end or e < pos:", f"{ind}    raise EOFError",
                    f"{ind}{target} = buf[pos:e]", f"{ind}pos = e"]
        if isinstance(sub, construct.Array) and not sub.discard:
            count = self.expr(sub.count)
            el = sub.subcon
            if isinstance(el, construct.FormatField):
                # one unpack for the array; the Struct of each short length kept (building one
                # from its format string costs more than the unpack)
                code, size = _field_code(el), el.length
                cache = self.const({}, "A")
                return [f"{ind}n = {count}",
                        f"{ind}if n < 0 or pos + n * {size} > end:", f"{ind}    raise EOFError",
                        f"{ind}s = {cache}.get(n)",
                        f"{ind}if s is None:",
                        f"{ind}    s = Struct('<%d{code}' % n)",
                        f"{ind}    if n <= {_CACHED_LENGTHS}:",
                        f"{ind}        {cache}[n] = s",
                        f"{ind}{target} = ListContainer(s.unpack_from(buf, pos))",
                        f"{ind}pos += n * {size}"]
            if isinstance(el, construct.Struct):
                f = self.struct_func(el)
                return [f"{ind}n = {count}",
                        f"{ind}if n < 0 or n > end - pos:", f"{ind}    raise EOFError",
                        f"{ind}lst = ListContainer()",
                        f"{ind}for _ in range(n):",
                        f"{ind}    o, pos = {f}(buf, pos, end, this)",
                        f"{ind}    lst.append(o)",
                        f"{ind}{target} = lst"]
            raise NotImplementedError(f"array of {el!r}")
        if isinstance(sub, construct.Struct):
            return [f"{ind}{target}, pos = {self.struct_func(sub)}(buf, pos, end, this)"]
        if isinstance(sub, construct.IfThenElse):
            if sub.elsesubcon is not construct.Pass:
                raise NotImplementedError("IfThenElse with an else")
            return ([f"{ind}if {self.expr(sub.condfunc)}:"]
                    + self.value(sub.thensubcon, target, ind + "    ")
                    + [f"{ind}else:", f"{ind}    {target} = None"])
        raise NotImplementedError(f"{sub!r}")


def generate(struct_: construct.Struct):
    """parse(buf, pos, count, parent=None) -> (list of `count` Containers, position after
    them), for bytes `buf`; `parent` is what the struct reads as this._ (a Stream alone: a dict
    with record_flags). Raises some exception wherever construct's parse of the same bytes (a
    stream over buf) would fail; the caller re-parses with construct to name the error."""
    g = _Gen()
    top = g.struct_func(struct_)
    src = "\n".join(g.src) + (
        "def parse(buf, pos, count, parent=None):\n"
        "    out, end = [], len(buf)\n"
        "    for _ in range(count):\n"
        f"        o, pos = {top}(buf, pos, end, parent)\n"
        "        out.append(o)\n"
        "    return out, pos\n")
    code = compile(src, f"<layout_parse {struct_.name or 'struct'}>", "exec")
    exec(code, g.ns)  # noqa: S102 - source generated above from layout.py only
    parse = g.ns["parse"]
    parse.source = src
    return parse
