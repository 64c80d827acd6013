"""Make a real fine-tuning series of all-MiniLM-L6-v2 on CPU: AdamW (torch defaults, weight decay
0.01), lr 3e-5, a checkpoint every N steps, saved as safetensors.

Objective: the sentence-transformers recipe, MultipleNegativesRankingLoss (in-batch softmax over
cosine similarities, scale 20, symmetric). Positive pairs are the paraphrase pairs of
evalmodels.minilm.SENTENCES (0-1, 2-3, ...) and adjacent sentences of one paragraph of the Python
documentation that ships with CPython (pydoc_data.topics, ~2,000 sentences), an unsupervised
"adjacent sentences are related" signal. Fresh text every step gives the word embeddings the
gradient coverage a real fine-tuning run gives them (thousands of distinct tokens per checkpoint
interval), rather than touching only the few hundred tokens of 50 sentences.

    python tools/finetune_series.py --out /tmp/minilm-series --steps 300 --every 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evalmodels import minilm  # noqa: E402


def doc_pairs(seed: int = 0) -> list[tuple[str, str]]:
    """Adjacent sentence pairs from the paragraphs of CPython's bundled documentation topics."""
    import pydoc_data.topics as topics
    pairs = []
    for key in sorted(topics.topics):
        for para in re.split(r"\n\s*\n", topics.topics[key]):
            sents = [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+", para)]
            sents = [s for s in sents if 30 < len(s) < 220 and not re.search(r"[>{}=\[\]|]", s)]
            pairs += [(sents[i], sents[i + 1]) for i in range(len(sents) - 1)]
    random.Random(seed).shuffle(pairs)
    return pairs


def make_series(out: str, *, steps: int = 300, every: int = 20, lr: float = 3e-5,
                batch_pairs: int = 16, max_len: int = 48, seed: int = 0, threads: int = 2,
                log=print) -> list[str]:
    """Fine-tune and write `out`/step-XXXXXX.safetensors at steps 0, every, 2·every, ... steps.
    Returns the checkpoint paths. Deterministic for a given seed and torch build."""
    import safetensors.torch
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    os.makedirs(out, exist_ok=True)
    base = minilm.load_state()
    params = {k: torch.nn.Parameter(v.clone()) for k, v in base.items() if v.is_floating_point()}
    state = dict(base)
    state.update(params)
    opt = torch.optim.AdamW(list(params.values()), lr=lr)  # torch defaults: wd 0.01, eps 1e-8
    s = minilm.SENTENCES
    para = [(s[2 * i], s[2 * i + 1]) for i in range(len(s) // 2)]
    docs = doc_pairs(seed)
    rng = random.Random(seed)

    def emb(sents):
        toks = [minilm.tokenize(t, max_len) for t in sents]
        n = max(len(t) for t in toks)
        ids = torch.zeros(len(toks), n, dtype=torch.long)
        mask = torch.zeros(len(toks), n, dtype=torch.long)
        for i, t in enumerate(toks):
            ids[i, :len(t)] = torch.tensor(t)
            mask[i, :len(t)] = 1
        h = minilm.encode_tokens(state, ids, mask)
        m = mask[..., None].float()
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)

    def save(step):
        path = os.path.join(out, f"step-{step:06d}.safetensors")
        tensors = {k: (params[k].detach() if k in params else v).contiguous().clone()
                   for k, v in base.items()}
        safetensors.torch.save_file(tensors, path)
        return path

    paths = [save(0)]
    t0, cursor = time.time(), 0
    for step in range(1, steps + 1):
        batch = rng.sample(para, 4)
        batch += docs[cursor:cursor + batch_pairs - 4]
        cursor = (cursor + batch_pairs - 4) % max(1, len(docs) - batch_pairs)
        a = emb([p[0] for p in batch])
        b = emb([p[1] for p in batch])
        logits = 20.0 * a @ b.T
        labels = torch.arange(len(batch))
        loss = (torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        if step % every == 0:
            paths.append(save(step))
            log(f"step {step}: loss {loss.item():.4f}, {time.time() - t0:.0f} s")
    with open(os.path.join(out, "series.json"), "w") as f:
        json.dump(dict(steps=steps, every=every, lr=lr, batch_pairs=batch_pairs, max_len=max_len,
                       seed=seed, optimizer="torch.optim.AdamW defaults (wd 0.01)",
                       torch=torch.__version__, checkpoints=[os.path.basename(p) for p in paths],
                       seconds=round(time.time() - t0, 1)), f, indent=1)
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--batch-pairs", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    make_series(a.out, steps=a.steps, every=a.every, lr=a.lr, batch_pairs=a.batch_pairs,
                max_len=a.max_len, seed=a.seed, threads=a.threads,
                log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
