"""What every SAE format shares: the encoder it produces, the registry, file-reading helpers.

A format is one module in this package that registers a :class:`SaeFormat`: ``detect(path)``
says whether a file or folder is in that layout (and which file to read), ``load(path, source)``
returns an :class:`Encoder`, ``hook(path, source)`` reads only the config to say where the SAE
reads.  ``load_encoder`` (in the package) tries the formats in registration order.  The math of
each architecture lives in ``architectures.py``; an encoder names its function there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from labeler.activations.formats.architectures import ARCHITECTURES, Architecture
from labeler.core.errors import InputError

if TYPE_CHECKING:
    from labeler.activations.hookpoints import SaeHook
    from labeler.activations.sources import SaeSource

ENCODE_BLOCK = 16384
"""Features per block when encoding: bounds the [tokens, block] pre-activation buffer."""

SIGNS = ("pos", "neg")


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
    """x [N, d_in] -> Encoded, for any registered architecture.

    Input steps, in order (the producers' own order): ``input_scale`` and ``center_input`` make
    the Hugging Face activation equal to the one the SAE was trained on; then the SAE's own
    ``normalize``, ``norm_scale`` and ``subtract_b_dec``.  With ``signs`` the SAE's latents (or
    neurons) become ``len(signs)`` features each: feature ``j`` is side ``signs[j // n_latents]``
    of latent ``j % n_latents``, activating as max(±a, 0)."""

    name: str
    format: str  # a registered format name (saelens | sparsify | gemmascope | gemmascope2 | neurons)
    path: str
    d_in: int
    n_features: int
    architecture: str  # as the SAE's files name it (recorded in the manifest)
    activation: str = "relu"  # key of ARCHITECTURES: the formula used
    W_enc: torch.Tensor | None = None  # [d_in, n_latents]
    b_enc: torch.Tensor | None = None
    W_dec: torch.Tensor | None = None  # [n_features, d_out]: a negative side's row is its latent's, negated
    b_dec: torch.Tensor | None = None
    threshold: torch.Tensor | None = None
    k: int | None = None
    params: dict[str, torch.Tensor] = field(default_factory=dict)  # other tensors (gated: b_gate, b_mag, r_mag)
    subtract_b_dec: bool = False
    normalize: str = "none"  # none | constant_norm_rescale | layer_norm
    norm_scale: float | None = None  # SAELens expected_average_only_in factor (x * factor)
    input_scale: float | None = None  # reading correction (Gemma Scope embedding SAEs: 1/sqrt(d))
    center_input: bool = False  # TransformerLens centre_writing_weights: subtract the per-token mean
    rescale_by_decoder_norm: bool = False
    signs: tuple[str, ...] | None = None
    hook: "SaeHook | None" = None  # where the SAE reads, in its files' own terms
    source: dict = field(default_factory=dict)  # where the files came from (SaeSource.describe())
    options: dict = field(default_factory=dict)  # further facts for the manifest

    def __post_init__(self) -> None:
        arch = self.arch  # unknown names fail here, not mid-collect
        if self.signs is not None:
            if not self.signs or any(s not in SIGNS for s in self.signs) or len(set(self.signs)) != len(self.signs):
                raise InputError(f"signs must be 'pos', 'neg' or 'pos,neg' (got {','.join(self.signs)!r})")
        elif arch.signed and self.activation != "identity":
            raise InputError(f"SAE {self.path}: {self.architecture} activations are signed; encode them with signs")
        if arch.select and not self.k:
            raise InputError(f"SAE {self.path}: the {self.architecture} architecture needs k")
        missing = [n for n in ("W_enc", *arch.needs) if self._tensor(n) is None] if self.activation != "identity" else []
        if missing:
            raise InputError(f"SAE {self.path}: the {self.architecture} architecture needs tensors {missing}")
        if self.signs and self.W_dec is not None and self.W_dec.shape[0] == self.n_latents:
            # one decoder row per feature, so every decoder-side use (directions, promoted
            # tokens) lines up with the feature numbering
            self.W_dec = torch.cat([self.W_dec if s == "pos" else -self.W_dec for s in self.signs])
        if arch.select == "groups" and self.n_latents % self.k:
            raise InputError(f"SAE {self.path}: groupmax needs the {self.n_latents} latents to split into k={self.k} groups")

    @property
    def arch(self) -> Architecture:
        try:
            return ARCHITECTURES[self.activation]
        except KeyError:
            raise InputError(f"SAE {self.path}: no encoder for architecture {self.activation!r} "
                             f"(known: {', '.join(sorted(ARCHITECTURES))})") from None

    @property
    def n_latents(self) -> int:
        """The SAE's own width (``n_features`` counts each side separately)."""
        return self.n_features // len(self.signs) if self.signs else self.n_features

    def _tensor(self, name: str) -> torch.Tensor | None:
        return getattr(self, name) if name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold") else self.params.get(name)

    def to(self, device: str | torch.device) -> "Encoder":
        for attr in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
            t = getattr(self, attr)
            if t is not None:
                setattr(self, attr, t.to(device))
        self.params = {k: v.to(device) for k, v in self.params.items()}
        return self

    def describe(self) -> dict:
        out = {"name": self.name, "format": self.format, "path": self.path, "d_in": self.d_in,
               "n_features": self.n_features, "architecture": self.architecture, "activation": self.activation,
               "k": self.k, "apply_b_dec_to_input": self.subtract_b_dec, "normalize_activations": self.normalize,
               "norm_scaling_factor": self.norm_scale, "input_scale": self.input_scale,
               "center_input": self.center_input, "rescale_acts_by_decoder_norm": self.rescale_by_decoder_norm,
               "hook": asdict(self.hook) if self.hook is not None else None, "source": dict(self.source),
               **self.options}
        if self.signs:
            n = self.n_latents
            unit = "neuron" if self.activation == "identity" else "latent"
            out["signs"] = list(self.signs)
            out["feature_sides"] = [{"sign": s, "start": i * n, "end": (i + 1) * n, "of": unit,
                                     "activation": "max(x, 0)" if s == "pos" else "max(-x, 0)"}
                                    for i, s in enumerate(self.signs)]
        return out

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.input_scale is not None:
            x = x * self.input_scale
        if self.center_input:
            x = x - x.mean(dim=-1, keepdim=True)
        if self.normalize == "constant_norm_rescale":
            x = x * (self.d_in ** 0.5) / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        elif self.normalize == "layer_norm":
            x = x - x.mean(dim=-1, keepdim=True)
            x = x / (x.std(dim=-1, keepdim=True) + 1e-5)  # SAELens: unbiased std, eps on the std
        if self.norm_scale is not None:
            x = x * self.norm_scale
        if self.subtract_b_dec and self.b_dec is not None:
            x = x - self.b_dec
        return x

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, features: tuple[int, int] | None = None, *,
               block: int = ENCODE_BLOCK) -> Encoded:
        """Activations of features ``[a, b)`` (default: all) for inputs x [N, d_in].

        The pre-activations are computed ``block`` features at a time, so no [N, F] tensor of a
        wide SAE is ever made: dense architectures return [N, b - a]; selections (TopK) find
        the global winners block by block and keep those inside the range (indices relative to
        ``a``, others as value 0 at index 0)."""
        a, b = features if features is not None else (0, self.n_features)
        if not 0 <= a < b <= self.n_features:
            raise ValueError(f"feature range [{a}, {b}) is not inside [0, {self.n_features})")
        xp = self.preprocess(x)
        if not self.signs:
            return self._latents(xp, a, b, block)
        n = self.n_latents
        winners = self._select(xp, 0, n, block) if self.arch.select else None
        parts = []
        for side, sign in enumerate(self.signs):
            lo, hi = max(a, side * n), min(b, (side + 1) * n)
            if lo >= hi:
                continue
            s, e = lo - side * n, hi - side * n
            flip = 1.0 if sign == "pos" else -1.0
            if winners is None:
                parts.append(Encoded(hi - lo, dense=(self._latents(xp, s, e, block).dense * flip).clamp_min_(0)))
            else:
                vals, idx = _restrict(winners[0] * flip, winners[1], s, e, n)
                parts.append(Encoded(hi - lo, values=vals.clamp_min_(0), indices=idx + (lo - a)))
        if winners is None:
            return Encoded(b - a, dense=torch.cat([p.dense for p in parts], dim=1))
        return Encoded(b - a, values=torch.cat([p.values for p in parts], dim=1),
                       indices=torch.cat([p.indices for p in parts], dim=1))

    def _latents(self, xp: torch.Tensor, a: int, b: int, block: int) -> Encoded:
        """Latents ``[a, b)`` as the architecture gives them (no sign split)."""
        arch = self.arch
        if arch.select:
            vals, idx = _restrict(*self._select(xp, a, b, block), a, b, self.n_latents)
            return Encoded(b - a, values=vals, indices=idx)
        if arch.name == "identity":
            return Encoded(b - a, dense=xp[:, a:b])
        out = torch.empty(xp.shape[0], b - a, dtype=xp.dtype, device=xp.device)
        for s in range(a, b, block):
            e = min(s + block, b)
            out[:, s - a:e - a] = arch.block(self, xp, s, e)
        return Encoded(b - a, dense=out)

    def _select(self, xp: torch.Tensor, a: int, b: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The winners (finished values, absolute latent indices) a selection keeps per token.
        TopK looks at every latent; groupmax only at the groups that meet ``[a, b)``."""
        arch, k, n = self.arch, int(self.k), self.n_latents
        if arch.select == "groups":
            g = n // k
            lo, hi = (a // g) * g, -(-b // g) * g
            step = max(g, (block // g) * g)
            vals, idx = [], []
            for s in range(lo, hi, step):
                e = min(s + step, hi)
                v, i = arch.block(self, xp, s, e).unflatten(-1, (-1, g)).max(dim=-1)
                vals.append(v)
                idx.append(i + torch.arange(s, e, g, device=i.device))
            return arch.finish(torch.cat(vals, -1)), torch.cat(idx, -1)
        by_abs = arch.select == "abs"
        vals = idx = None
        for s in range(0, n, block):
            e = min(s + block, n)
            score = arch.block(self, xp, s, e)
            bv, bi = _top(score, min(k, e - s), by_abs)
            bi = bi + s
            if vals is not None:
                bv, bi = torch.cat([vals, bv], dim=-1), torch.cat([idx, bi], dim=-1)
                bv, pos = _top(bv, min(k, bv.shape[-1]), by_abs)
                bi = bi.gather(-1, pos)
            vals, idx = bv, bi
        return arch.finish(vals), idx

    def unit_decoder(self) -> torch.Tensor | None:
        """Unit-norm decoder direction of every feature (a negative side points the other way)."""
        if self.W_dec is None:
            return None
        return self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _top(score: torch.Tensor, k: int, by_abs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not by_abs:
        return torch.topk(score, k, dim=-1, sorted=False)
    pos = torch.topk(score.abs(), k, dim=-1, sorted=False).indices
    return score.gather(-1, pos), pos


def _restrict(vals: torch.Tensor, idx: torch.Tensor, a: int, b: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Winners inside ``[a, b)`` of ``n`` latents, indices relative to ``a``; the others as
    value 0 at index 0."""
    if (a, b) == (0, n):
        return vals, idx
    inside = (idx >= a) & (idx < b)
    return torch.where(inside, vals, 0.0), torch.where(inside, idx - a, 0)


@dataclass(frozen=True)
class SaeFormat:
    """One on-disk layout of SAE weights."""

    name: str
    description: str  # for error messages: what the layout looks like
    detect: Callable[[Path], Path | None]  # the file or folder to load, or None: not this layout
    load: Callable[[Path, "SaeSource"], Encoder]
    hook: Callable[[Path, "SaeSource"], "SaeHook | None"]  # where it reads, from the config alone
    files: tuple[str, ...] = ()  # the file names it reads inside an SAE folder (what to download)


SAE_FORMATS: dict[str, SaeFormat] = {}
"""Every on-disk format by name, in the order ``load_encoder`` tries them."""


def register_format(fmt: SaeFormat) -> SaeFormat:
    if fmt.name in SAE_FORMATS:
        raise ValueError(f"SAE format {fmt.name!r} is registered twice")
    SAE_FORMATS[fmt.name] = fmt
    return fmt


# --- file-reading helpers shared by the format modules ------------------------------------------

def read_json(path: Path, what: str = "SAE") -> dict:
    if not path.exists():
        raise InputError(f"{what} {path.parent}: {path.name} is missing")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{what} {path.parent}: {path.name} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{what} {path.parent}: {path.name} holds {type(cfg).__name__}, not an object")
    return cfg


def read_cfg(path: Path) -> dict:
    return read_json(path / "cfg.json")


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


def refuse_unknown_keys(cfg: dict, known: set[str] | dict, where: str) -> None:
    """Every key must be one the loader knows (honoured, refused or known to be inert): an
    unknown option might change the encoding, and ignoring it silently could be wrong."""
    unknown = sorted(k for k in cfg if k not in known)
    if unknown:
        raise InputError(f"{where}: unknown option(s) {', '.join(map(repr, unknown))}; labeler cannot tell "
                         f"whether they change the encoding, so it refuses the SAE rather than ignore them")
