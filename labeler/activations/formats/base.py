"""What every SAE format shares: the encoder it produces, the registry, file-reading helpers.

A format is one module in this package that registers a :class:`SaeFormat` with
``@register_format``: ``detect(path)`` says whether a file or folder is in that layout (and
which file to read), ``load(path)`` returns an :class:`Encoder`.  ``load_encoder`` (in the
package) tries the formats in registration order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from labeler.core.errors import InputError

ENCODE_BLOCK = 16384
"""Features per block when encoding: bounds the [tokens, block] pre-activation buffer."""


@dataclass
class Encoded:
    """Feature activations of N tokens: ``dense`` [N, F] or ``values``/``indices`` [N, k]
    (sparse form: a value of 0 means "no feature here", its index is meaningless)."""

    n_features: int
    dense: torch.Tensor | None = None
    values: torch.Tensor | None = None
    indices: torch.Tensor | None = None

    def to_dense(self) -> torch.Tensor:
        if self.dense is not None:
            return self.dense
        out = torch.zeros(self.values.shape[0], self.n_features, dtype=self.values.dtype, device=self.values.device)
        # add, not assign: a range-restricted TopK result pads with value 0 at index 0, which may
        # also hold a real value
        return out.scatter_add_(1, self.indices, self.values)


@dataclass
class Encoder:
    """x [N, d_in] -> Encoded. ``architecture``: standard | topk | jumprelu | neurons."""

    name: str
    format: str  # a registered format name (saelens | sparsify | gemmascope | neurons)
    path: str
    d_in: int
    n_features: int
    architecture: str
    W_enc: torch.Tensor | None = None  # [d_in, F]
    b_enc: torch.Tensor | None = None
    W_dec: torch.Tensor | None = None  # [F, d_in]
    b_dec: torch.Tensor | None = None
    threshold: torch.Tensor | None = None
    k: int | None = None
    subtract_b_dec: bool = False
    normalize: str = "none"  # none | constant_norm_rescale | layer_norm | scale
    input_scale: float | None = None
    options: dict = field(default_factory=dict)

    def to(self, device: str | torch.device) -> "Encoder":
        for attr in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
            t = getattr(self, attr)
            if t is not None:
                setattr(self, attr, t.to(device))
        return self

    def describe(self) -> dict:
        return {"name": self.name, "format": self.format, "path": self.path, "d_in": self.d_in,
                "n_features": self.n_features, "architecture": self.architecture, "k": self.k,
                "apply_b_dec_to_input": self.subtract_b_dec, "normalize_activations": self.normalize}

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.normalize == "constant_norm_rescale":
            x = x * (self.d_in ** 0.5) / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        elif self.normalize == "layer_norm":
            x = x - x.mean(dim=-1, keepdim=True)
            x = x / (x.std(dim=-1, keepdim=True) + 1e-5)
        if self.input_scale is not None:
            x = x * self.input_scale
        if self.subtract_b_dec and self.b_dec is not None:
            x = x - self.b_dec
        return x

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, features: tuple[int, int] | None = None, *,
               block: int = ENCODE_BLOCK) -> Encoded:
        """Activations of features ``[a, b)`` (default: all) for inputs x [N, d_in].

        The pre-activations are computed ``block`` features at a time, so no [N, F] tensor of a
        wide SAE is ever made: dense architectures return [N, b - a]; TopK finds the global top
        k block by block and keeps the winners inside the range (indices relative to ``a``,
        others as value 0 at index 0)."""
        a, b = features if features is not None else (0, self.n_features)
        if not 0 <= a < b <= self.n_features:
            raise ValueError(f"feature range [{a}, {b}) is not inside [0, {self.n_features})")
        if self.architecture == "neurons":
            return Encoded(b - a, dense=x.float()[:, a:b])
        xp = self.preprocess(x)
        if self.architecture == "topk":
            vals, idx = self._topk_blocks(xp, block)
            if (a, b) != (0, self.n_features):
                inside = (idx >= a) & (idx < b)
                vals, idx = torch.where(inside, vals, 0.0), torch.where(inside, idx - a, 0)
            return Encoded(b - a, values=vals, indices=idx)
        out = torch.empty(xp.shape[0], b - a, dtype=xp.dtype, device=xp.device)
        for s in range(a, b, block):
            e = min(s + block, b)
            pre = torch.addmm(self.b_enc[s:e], xp, self.W_enc[:, s:e])
            if self.architecture == "jumprelu":
                pre = pre.clamp_min(0) * (pre > self.threshold[s:e])
            else:
                pre = pre.clamp_min_(0)
            out[:, s - a:e - a] = pre
        return Encoded(b - a, dense=out)

    def _topk_blocks(self, xp: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The top ``k`` pre-activations over all features, merged block by block."""
        vals = idx = None
        for s in range(0, self.n_features, block):
            e = min(s + block, self.n_features)
            pre = torch.addmm(self.b_enc[s:e], xp, self.W_enc[:, s:e])
            bv, bi = torch.topk(pre, min(self.k, e - s), dim=-1, sorted=False)
            bi = bi + s
            if vals is None:
                vals, idx = bv, bi
            else:
                both_v, both_i = torch.cat([vals, bv], dim=-1), torch.cat([idx, bi], dim=-1)
                vals, pos = torch.topk(both_v, min(self.k, both_v.shape[-1]), dim=-1, sorted=False)
                idx = both_i.gather(-1, pos)
        return vals.clamp_min_(0), idx

    def unit_decoder(self) -> torch.Tensor | None:
        if self.W_dec is None:
            return None
        return self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class SaeFormat:
    """One on-disk layout of SAE weights."""

    name: str
    description: str  # for error messages: what the layout looks like
    detect: Callable[[Path], Path | None]  # the file or folder to load, or None: not this layout
    load: Callable[[Path], Encoder]


SAE_FORMATS: dict[str, SaeFormat] = {}
"""Every on-disk format by name, in the order ``load_encoder`` tries them."""


def register_format(fmt: SaeFormat) -> SaeFormat:
    if fmt.name in SAE_FORMATS:
        raise ValueError(f"SAE format {fmt.name!r} is registered twice")
    SAE_FORMATS[fmt.name] = fmt
    return fmt


# --- file-reading helpers shared by the format modules ------------------------------------------

def read_cfg(path: Path) -> dict:
    cfg_path = path / "cfg.json"
    if not cfg_path.exists():
        raise InputError(f"SAE {path}: cfg.json is missing")
    try:
        return json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"SAE {path}: cfg.json is not valid JSON ({e})") from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return {k: v.float() for k, v in load_file(str(path)).items()}
    except Exception as e:  # safetensors raises several types for damaged files
        raise InputError(f"SAE weights {path}: unreadable or corrupt safetensors file ({e})") from None


def need(tensors: dict, names: list[str], where: Path) -> None:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise InputError(f"SAE weights {where}: missing tensors {missing} (found {sorted(tensors)})")


def check_shape(t: torch.Tensor, shape: tuple[int, ...], what: str, where: Path) -> None:
    if tuple(t.shape) != shape:
        raise InputError(f"SAE weights {where}: {what} has shape {tuple(t.shape)}, expected {shape}")
