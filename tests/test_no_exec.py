"""No code execution anywhere (issue 8): `.pt` input is loaded only with weights_only=True, so a
pickle that would run code is refused with a typed error and its payload never runs; metadata is
returned verbatim and never evaluated; tensor names are never used as paths (decode of single
files, of sharded folders and with --tensor filters writes only the output files asked for)."""

from __future__ import annotations

import json
import os
import pickle
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from wcodec import dtypes as D
from wcodec.cli import app
from wcodec.errors import InputError
from wcodec.reader import Reader
from wcodec.writer import EncodeOptions, Writer

torch = pytest.importorskip("torch")
RUN = CliRunner()


def cli(*args):
    return RUN.invoke(app, [str(a) for a in args])


class Evil:
    """Unpickling this calls os.mkdir(marker): the payload leaves evidence if it ever runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def files_under(folder) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), folder)
            for d, _, fs in os.walk(folder) for f in fs}


@pytest.mark.parametrize("style", ["torch_zip", "legacy_pickle", "nested_in_state_dict"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, style):
    marker = tmp_path / "PWNED"
    src = tmp_path / "evil.pt"
    if style == "torch_zip":
        torch.save(Evil(marker), src)
    elif style == "nested_in_state_dict":
        torch.save({"w": torch.zeros(3), "x": Evil(marker)}, src)
    else:
        with open(src, "wb") as f:
            pickle.dump({"w": Evil(marker)}, f, protocol=2)
    res = cli("encode", "-q", src, "-o", tmp_path / "evil.wcodec")
    assert res.exit_code == 4, res.output  # InputError: not a loadable state dict
    assert "weights_only" in res.output
    assert not marker.exists(), "the pickle's payload ran"
    assert not (tmp_path / "evil.wcodec").exists()
    from wcodec import formats
    from pathlib import Path
    with pytest.raises(InputError):
        meta, it = formats.iter_tensors(Path(src))
        list(it)
    assert not marker.exists()


def test_plain_state_dict_still_loads(tmp_path):
    """The control: the same path with an honest state dict encodes (weights_only=True is not
    simply refusing everything)."""
    src = tmp_path / "ok.pt"
    torch.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, src)
    res = cli("encode", "-q", src, "-o", tmp_path / "ok.wcodec")
    assert res.exit_code == 0, res.output


HOSTILE_META = {
    "py": "__import__('os').mkdir('PWNED_META')",
    "jinja": "{{ cycler.__init__.__globals__.os.mkdir('PWNED_META') }}",
    "shell": "$(mkdir PWNED_META)`mkdir PWNED_META`",
    "json": '{"__class__": "os.system", "args": ["mkdir PWNED_META"]}',
    "fmt": "{0.__class__.__mro__}",
}


def test_metadata_is_returned_verbatim_never_evaluated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "m.wcodec"
    with Writer(p, metadata=HOSTILE_META, options=EncodeOptions(threads=1)) as w:
        w.add("w", D.by_name("float32"), (2,), np.zeros(2, np.float32))
    with Reader(p) as r:
        got = {k: v for k, v in r.metadata().items() if not k.startswith("wcodec.")}
    assert got == HOSTILE_META
    assert cli("inspect", "--json", p).exit_code == 0
    assert cli("verify", p).exit_code == 0
    out = tmp_path / "m.safetensors"
    assert cli("decode", "-q", p, "-o", out).exit_code == 0
    raw = out.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8:8 + n])["__metadata__"] == HOSTILE_META
    assert not (tmp_path / "PWNED_META").exists()


EVIL_NAMES = ["../../etc/x", "/tmp/wcodec_abs_evil", "a/../../b", "..", "./.hidden", "c:\\win",
              "nul\u2215slash"]


def _evil_file(path, names):
    with Writer(path, options=EncodeOptions(threads=1)) as w:
        for i, n in enumerate(names):
            w.add(n, D.by_name("int32"), (3,), np.arange(3, dtype=np.int32) + i)


def test_tensor_names_are_never_paths_single_file(tmp_path):
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    src = work / "evil.wcodec"
    _evil_file(src, EVIL_NAMES)
    before = files_under(tmp_path)
    out = work / "evil.safetensors"
    assert cli("decode", "-q", src, "-o", out).exit_code == 0
    assert files_under(tmp_path) == before | {"deep/er/evil.safetensors"}
    assert not os.path.exists("/tmp/wcodec_abs_evil")
    raw = out.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert set(header) == set(EVIL_NAMES)
    # --tensor filters match names as strings; they select, they never address files
    out2 = work / "one.safetensors"
    assert cli("decode", "-q", "--tensor", "../../etc/x", src, "-o", out2).exit_code == 0
    raw = out2.read_bytes()
    assert list(json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])) == ["../../etc/x"]
    assert cli("decode", "-q", "--salvage", "--tensor", "../*", src, "-o",
               work / "s.safetensors").exit_code == 0
    assert files_under(tmp_path) == before | {"deep/er/evil.safetensors", "deep/er/one.safetensors",
                                             "deep/er/s.safetensors"}


def test_tensor_names_are_never_paths_sharded_folder(tmp_path):
    folder = tmp_path / "model.wcodec"
    folder.mkdir()
    _evil_file(folder / "model-00001-of-00002.wcodec", EVIL_NAMES[:3])
    _evil_file(folder / "model-00002-of-00002.wcodec", EVIL_NAMES[3:])
    index = {"metadata": {}, "weight_map": {n: "model-00001-of-00002.safetensors"
                                            for n in EVIL_NAMES}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    before = files_under(tmp_path)
    out = tmp_path / "decoded"
    res = cli("decode", "-q", folder, "-o", out)
    assert res.exit_code == 0, res.output
    made = files_under(tmp_path) - before
    assert made == {"decoded/model-00001-of-00002.safetensors",
                    "decoded/model-00002-of-00002.safetensors",
                    "decoded/model.safetensors.index.json"}
    res = cli("decode", "-q", "-f", "--tensor", "../../etc/x", "--tensor", "..", folder, "-o", out)
    assert res.exit_code == 0, res.output
    assert files_under(tmp_path) - before == made
    assert not os.path.exists("/tmp/wcodec_abs_evil")
    assert sys.platform != "win32"  # the names above are only hostile where / separates paths
