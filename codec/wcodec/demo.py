"""`wcodec demo`: the built-in default job. It makes a small transformer-shaped model itself
(deterministic, no download), encodes it, verifies the file, decodes it, checks every tensor bit for
bit against the original, and shows what was saved."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from . import formats
from .inspect_view import inspect_report, render_inspect
from .reader import Reader
from .torch_interop import same_bits
from .writer import EncodeOptions


def make_model(seed: int = 0) -> dict:
    """A 2-layer transformer's worth of tensors, briefly trained so the weights are not pure noise,
    plus one tensor of each non-float32 dtype the format carries."""
    import torch
    g = torch.Generator().manual_seed(seed)
    d, ff, vocab, layers = 64, 256, 512, 2
    model = torch.nn.Sequential(
        torch.nn.Embedding(vocab, d),
        *[torch.nn.TransformerEncoderLayer(d, 4, ff, dropout=0.0, batch_first=True)
          for _ in range(layers)],
        torch.nn.Linear(d, vocab),
    )
    torch.manual_seed(seed)
    for p in model.parameters():
        if p.dim() > 1:
            torch.nn.init.xavier_uniform_(p, generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(30):  # a few steps of next-token prediction on a fixed random sequence
        x = torch.randint(0, vocab, (8, 16), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x)[:, :-1].reshape(-1, vocab),
                                                 x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tensors["extra.bf16_copy"] = tensors["0.weight"].to(torch.bfloat16)
    tensors["extra.fp16_copy"] = tensors["0.weight"].to(torch.float16)
    tensors["extra.fp8"] = tensors["3.weight"].to(torch.float8_e4m3fn)
    tensors["extra.position_ids"] = torch.arange(128, dtype=torch.int64).reshape(1, 128)
    tensors["extra.mask"] = torch.ones(16, 16, dtype=torch.bool).tril()
    tensors["extra.scale"] = torch.tensor(0.125)
    return tensors


def run_demo(workdir: Path) -> int:
    import safetensors.torch
    workdir.mkdir(parents=True, exist_ok=True)
    src, enc, dec = workdir / "model.safetensors", workdir / "model.wcodec", \
        workdir / "model.decoded.safetensors"
    tensors = make_model()
    safetensors.torch.save_file(tensors, str(src), metadata={"made_by": "wcodec demo"})
    typer.echo(f"1. made a small model: {len(tensors)} tensors, {src.stat().st_size:,} bytes "
               f"-> {src}", err=True)
    t0 = time.perf_counter()
    formats.encode_file(src, enc, EncodeOptions())
    t1 = time.perf_counter()
    typer.echo(f"2. encoded -> {enc}: {enc.stat().st_size:,} bytes "
               f"({100 * enc.stat().st_size / src.stat().st_size:.2f} % of the safetensors file) "
               f"in {t1 - t0:.2f} s", err=True)
    with Reader(enc) as r:
        problems = r.verify()
        report = inspect_report(r)
    if problems:
        typer.echo(f"3. verify FAILED: {problems}", err=True)
        return 5
    typer.echo("3. verified: structure, every CRC32C and every SHA-256", err=True)
    formats.decode_file(enc, dec)
    same_file = src.read_bytes() == dec.read_bytes()
    back = safetensors.torch.load_file(str(dec))
    mismatched = [k for k in tensors if k not in back or not same_bits(tensors[k], back[k])]
    if mismatched:
        typer.echo(f"4. decode MISMATCH in {mismatched}", err=True)
        return 5
    typer.echo(f"4. decoded -> {dec}: every tensor bit-identical"
               + ("; the whole file is byte-identical to the original" if same_file else ""),
               err=True)
    typer.echo("5. what was saved:", err=True)
    render_inspect(report)
    return 0
