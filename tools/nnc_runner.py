"""Runs NNCodec (PyPI `nncodec`, the MPEG NNC reference software) inside its own virtual environment
for tools/bench_lossy.py. Not part of wcodec: it is started as a subprocess with the venv's Python.

    python nnc_runner.py WEIGHTS.npz OUTDIR QP [QP ...]

For each QP it encodes the float32 tensors of WEIGHTS.npz with `nncodec.nn.encode` (dependent
quantization on, its defaults otherwise), decodes the bitstream with `nncodec.nn.decode`, writes the
decoded tensors to OUTDIR/nnc_qp<QP>.npz and prints one JSON line per QP with the bitstream size
and the encode and decode wall times. NNCodec imports torchvision, cv2, ptflops and torchmetrics at
import time for its data-set helpers, which this benchmark never uses: they are stubbed below so the
venv needs none of them (PyPI's torchvision would replace the CPU torch build).
"""

import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
import types


class _Any:
    """Stands in for any attribute of a stubbed module (classes, functions, constants)."""

    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Any()

    def __getattr__(self, name):
        return _Any()

    def __mro_entries__(self, bases):
        return (object,)


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    ROOTS = ("torchvision", "cv2", "ptflops", "torchmetrics", "wandb")

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.ROOTS:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = types.ModuleType(spec.name)
        m.__path__ = []
        m.__getattr__ = lambda attr: _Any()
        return m

    def exec_module(self, module):
        pass


def main(argv):
    weights, outdir, qps = argv[0], argv[1], [int(q) for q in argv[2:]]
    sys.meta_path.insert(0, _StubFinder())
    import contextlib
    import io

    import numpy as np
    import nncodec
    from nncodec.nn import decode, encode

    with np.load(weights) as z:
        params = {k: np.ascontiguousarray(z[k], dtype=np.float32) for k in z.files}
    os.makedirs(outdir, exist_ok=True)
    for qp in qps:
        args = {"qp": qp, "use_dq": True, "verbose": False, "results": outdir,
                "model": f"bench{qp}"}
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink):
            t0, c0 = time.perf_counter(), time.process_time()
            bs = encode({k: v.copy() for k, v in params.items()}, args)
            t1, c1 = time.perf_counter(), time.process_time()
            dec = decode(bs, args)
            t2, c2 = time.perf_counter(), time.process_time()
        out = os.path.join(outdir, f"nnc_qp{qp}.npz")
        np.savez(out, **{k: np.asarray(dec[k], dtype=np.float32).reshape(params[k].shape)
                         for k in params})
        print(json.dumps({"qp": qp, "bytes": len(bs), "encode_s": t1 - t0, "decode_s": t2 - t1,
                          "encode_cpu_s": c1 - c0, "decode_cpu_s": c2 - c1,
                          "decoded": out, "nncodec": getattr(nncodec, "__version__", "2.1.3")}),
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
