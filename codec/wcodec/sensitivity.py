"""Which layers tolerate error: noise-injection sensitivity and activation statistics (encoder
side of record kind 5, docs/factors.md). Needs torch; nothing here touches the file format.

    sens = wcodec.profile_sensitivity(model, inputs)          # name -> relative output change
    act = wcodec.sensitivity.activation_scales(model, inputs) # Linear name -> input RMS per feature
"""

from __future__ import annotations

from typing import Callable


def _forward(model, inputs, forward):
    import torch
    with torch.no_grad():
        if forward is not None:
            return forward(model, inputs)
        return model(inputs)


def _flat(y):
    import torch
    if isinstance(y, torch.Tensor):
        return y.detach().double().reshape(-1)
    if isinstance(y, dict):
        y = list(y.values())
    if isinstance(y, (list, tuple)):
        return torch.cat([_flat(v) for v in y if v is not None])
    raise TypeError(f"cannot compare model outputs of type {type(y).__name__}")


def profile_sensitivity(model, inputs, *, noise: float = 0.05, names=None, seed: int = 0,
                        forward: Callable | None = None, min_dims: int = 2) -> dict:
    """Relative output change ‖y' − y‖ / ‖y‖ when Gaussian noise of standard deviation
    `noise` × RMS(weight) is added to one weight at a time (every parameter of rank ≥ `min_dims`,
    or `names`). `model` is a torch.nn.Module called as model(inputs), or anything with
    `forward(model, inputs)`; a dict of tensors (a state) works with `forward`. Every weight is
    restored bit for bit afterwards. Returns {name: change}, most sensitive first."""
    import torch
    params = dict(model.items()) if isinstance(model, dict) else dict(model.named_parameters())
    if names is None:
        names = [n for n, p in params.items() if p.dim() >= min_dims and p.is_floating_point()]
    base = _flat(_forward(model, inputs, forward))
    norm = float(base.norm()) or 1.0
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for n in names:
        p = params[n]
        keep = p.detach().clone()
        rms = float(keep.double().pow(2).mean().sqrt())
        with torch.no_grad():
            p.add_((torch.randn(p.shape, generator=gen, dtype=torch.float64) * noise * rms)
                   .to(p.dtype))
        try:
            y = _flat(_forward(model, inputs, forward))
        finally:
            with torch.no_grad():
                p.copy_(keep)
        out[n] = float((y - base).norm()) / norm
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def activation_scales(model, inputs, *, forward: Callable | None = None) -> dict:
    """RMS of every input feature of every torch.nn.Linear over the calibration inputs:
    {weight name: numpy array (in_features,)} for `factor_encoder.decompose(act_scale=...)`."""
    import torch
    sums, counts, hooks = {}, {}, []
    for mod_name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            key = f"{mod_name}.weight" if mod_name else "weight"

            def hook(mod, args, out, key=key):
                x = args[0].detach().double().reshape(-1, args[0].shape[-1])
                sums[key] = sums.get(key, 0) + (x * x).sum(0)
                counts[key] = counts.get(key, 0) + x.shape[0]
            hooks.append(m.register_forward_hook(hook))
    try:
        _forward(model, inputs, forward)
    finally:
        for h in hooks:
            h.remove()
    return {k: (sums[k] / max(counts[k], 1)).sqrt().numpy() for k in sums}


__all__ = ["profile_sensitivity", "activation_scales"]
