"""The encode math of every SAE architecture: one small function each, registered here.

An architecture is either *dense* (``block`` gives the activations of features ``[s, e)``) or a
*selection* (``block`` gives scores; the k winners per token are kept, then ``finish`` maps the
kept scores to activations).  ``x`` is the already preprocessed input (normalised, b_dec
subtracted where the format says so); ``pre`` below is ``x @ W_enc[:, s:e] + b_enc[s:e]``.
The formulas follow each producer's inference code (SAELens ``saes/*.py``, sparsify
``fused_encoder.py``, Gemma Scope's JumpReLU), cited per function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from labeler.activations.formats.base import Encoder

Block = Callable[["Encoder", torch.Tensor, int, int], torch.Tensor]


@dataclass(frozen=True)
class Architecture:
    """How one architecture turns a preprocessed input into feature activations."""

    name: str
    block: Block
    """dense: activations [N, e - s]; selection: the scores [N, e - s] the winners are picked by"""
    needs: tuple[str, ...] = ()
    """tensors the formula reads (``W_enc`` always), checked when an encoder is built"""
    select: str | None = None
    """None (dense) | "topk" (largest k scores) | "abs" (largest k |scores|) | "groups" (max of each
    of k contiguous groups)"""
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None
    """selection only: kept scores -> activations"""
    signed: bool = False
    """activations can be negative (kept as two features per latent, one per sign)"""


ARCHITECTURES: dict[str, Architecture] = {}
"""Every architecture by the name the encoders use (formats map their own names onto these)."""


def register_architecture(name: str, *, needs: tuple[str, ...] = (), select: str | None = None,
                          finish: Callable[[torch.Tensor], torch.Tensor] | None = None, signed: bool = False):
    def deco(fn: Block) -> Block:
        if name in ARCHITECTURES:
            raise ValueError(f"SAE architecture {name!r} is registered twice")
        ARCHITECTURES[name] = Architecture(name, fn, needs, select, finish, signed)
        return fn
    return deco


def _pre(enc: "Encoder", x: torch.Tensor, s: int, e: int) -> torch.Tensor:
    pre = torch.addmm(enc.b_enc[s:e], x, enc.W_enc[:, s:e])
    if enc.rescale_by_decoder_norm:
        # SAELens TopKSAE.encode: pre-activations times each feature's decoder norm
        pre = pre * enc.W_dec[s:e].norm(dim=-1)
    return pre


def _relu(t: torch.Tensor) -> torch.Tensor:
    return t.clamp_min(0)


@register_architecture("relu", needs=("b_enc",))
def relu(enc: "Encoder", x: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """SAELens ``standard`` (and transcoders): relu(pre)."""
    return _pre(enc, x, s, e).clamp_min_(0)


@register_architecture("tanh_relu", needs=("b_enc",))
def tanh_relu(enc: "Encoder", x: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """SAELens 5.x ``activation_fn: tanh-relu``: tanh(relu(pre))."""
    return torch.tanh(_pre(enc, x, s, e).clamp_min_(0))


@register_architecture("jumprelu", needs=("b_enc", "threshold"))
def jumprelu(enc: "Encoder", x: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """JumpReLU (SAELens jumprelu / jumprelu transcoders, BatchTopK's inference form, Gemma
    Scope): relu(pre) where pre > threshold (strictly), else 0."""
    pre = _pre(enc, x, s, e)
    return pre.clamp_min(0) * (pre > enc.threshold[s:e])


@register_architecture("gated", needs=("b_gate", "b_mag", "r_mag"))
def gated(enc: "Encoder", x: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """SAELens gated: h = x @ W_enc; 1[h + b_gate > 0] * relu(h * exp(r_mag) + b_mag)."""
    h = x @ enc.W_enc[:, s:e]
    p = enc.params
    gate = (h + p["b_gate"][s:e]) > 0
    mag = h * torch.exp(p["r_mag"][s:e]) + p["b_mag"][s:e]
    return gate * mag.clamp_min(0)


@register_architecture("topk", needs=("b_enc",), select="topk", finish=_relu)
def topk(enc: "Encoder", x: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """TopK (SAELens topk, sparsify activation topk): the k largest pre-activations, relu'd
    (sparsify relu's first: the same winners and values, except among non-positive ties)."""
    return _pre(enc, x, s, e)


@register_architecture("abstopk", needs=("b_enc",), select="abs", finish=lambda t: t, signed=True)
def abstopk(enc: "Encoder", x: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """SAELens abstopk and sparsify ``signed``: the k pre-activations largest in |.|, sign kept."""
    return _pre(enc, x, s, e)


@register_architecture("groupmax", needs=("b_enc",), select="groups", finish=lambda t: t)
def groupmax(enc: "Encoder", x: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """sparsify groupmax: relu(pre), then the max of each of k contiguous groups of F/k latents."""
    return _pre(enc, x, s, e).clamp_min_(0)


@register_architecture("identity")
def identity(enc: "Encoder", x: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """``neurons``: every unit of the hookpoint is a feature (signed)."""
    return x[:, s:e]
