"""Feature sources: SAE weights in the SAELens, sparsify and Gemma Scope layouts, or neurons.

Every loader returns an :class:`Encoder` that maps hookpoint activations [N, d_in] to feature
activations, either dense [N, n_features] or, for TopK SAEs, sparse (values, indices) [N, k]
so that later bookkeeping can skip the zeros.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from labeler.core.errors import ConfigError, InputError


@dataclass
class Encoded:
    """Feature activations of N tokens: ``dense`` [N, F] or ``values``/``indices`` [N, k]."""

    n_features: int
    dense: torch.Tensor | None = None
    values: torch.Tensor | None = None
    indices: torch.Tensor | None = None

    def to_dense(self) -> torch.Tensor:
        if self.dense is not None:
            return self.dense
        out = torch.zeros(self.values.shape[0], self.n_features, dtype=self.values.dtype, device=self.values.device)
        return out.scatter_(1, self.indices, self.values)


@dataclass
class Encoder:
    """x [N, d_in] -> Encoded. ``architecture``: standard | topk | jumprelu | neurons."""

    name: str
    format: str  # saelens | sparsify | gemmascope | neurons
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
    def encode(self, x: torch.Tensor) -> Encoded:
        if self.architecture == "neurons":
            return Encoded(self.n_features, dense=x.float())
        pre = torch.addmm(self.b_enc, self.preprocess(x), self.W_enc)
        if self.architecture == "topk":
            vals, idx = torch.topk(pre, self.k, dim=-1, sorted=False)
            return Encoded(self.n_features, values=vals.clamp_min_(0), indices=idx)
        if self.architecture == "jumprelu":
            return Encoded(self.n_features, dense=pre.clamp_min(0) * (pre > self.threshold))
        return Encoded(self.n_features, dense=pre.clamp_min_(0))

    def unit_decoder(self) -> torch.Tensor | None:
        if self.W_dec is None:
            return None
        return self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# ---------------------------------------------------------------------------------------------

def load_encoder(spec: str, *, hook: str | None = None, d_model: int | None = None) -> Encoder:
    """Open ``spec`` (``neurons`` or a path) and check its width against the model's ``d_model``."""
    if spec == "neurons":
        if d_model is None:
            raise ConfigError("--sae neurons needs the hookpoint width")
        return Encoder(name="neurons", format="neurons", path="neurons", d_in=d_model,
                       n_features=d_model, architecture="neurons")
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"SAE {spec!r}: no such file or folder (give a path or 'neurons')")
    if path.is_file() and path.suffix == ".npz":
        enc = _load_gemmascope(path)
    elif path.is_file():
        raise InputError(f"SAE {spec!r}: expected a folder (SAELens or sparsify) or a Gemma Scope params.npz")
    elif (path / "params.npz").exists():
        enc = _load_gemmascope(path / "params.npz")
    elif (path / "sae_weights.safetensors").exists():
        enc = _load_saelens(path)
    elif (path / "sae.safetensors").exists():
        enc = _load_sparsify(path)
    else:
        sub = _sparsify_subfolder(path, hook)
        if sub is None:
            subs = sorted(p.name for p in path.iterdir() if (p / "sae.safetensors").exists())
            detail = f"; hookpoint folders here: {', '.join(subs)}" if subs else ""
            raise InputError(
                f"SAE {spec!r}: not a recognised layout (need cfg.json + sae_weights.safetensors (SAELens), "
                f"cfg.json + sae.safetensors (sparsify) or params.npz (Gemma Scope)){detail}"
            )
        enc = _load_sparsify(sub)
    if d_model is not None and enc.d_in != d_model:
        raise ConfigError(
            f"size mismatch: SAE {spec!r} expects inputs of width d_in={enc.d_in}, but hookpoint "
            f"{hook!r} of the model has width {d_model}"
        )
    return enc


def _sparsify_subfolder(path: Path, hook: str | None) -> Path | None:
    if hook and (path / hook / "sae.safetensors").exists():
        return path / hook
    return None


def _read_cfg(path: Path) -> dict:
    cfg_path = path / "cfg.json"
    if not cfg_path.exists():
        raise InputError(f"SAE {path}: cfg.json is missing")
    try:
        return json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"SAE {path}: cfg.json is not valid JSON ({e})") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return {k: v.float() for k, v in load_file(str(path)).items()}
    except Exception as e:  # safetensors raises several types for damaged files
        raise InputError(f"SAE weights {path}: unreadable or corrupt safetensors file ({e})") from None


def _need(tensors: dict, names: list[str], where: Path) -> None:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise InputError(f"SAE weights {where}: missing tensors {missing} (found {sorted(tensors)})")


def _check_shape(t: torch.Tensor, shape: tuple[int, ...], what: str, where: Path) -> None:
    if tuple(t.shape) != shape:
        raise InputError(f"SAE weights {where}: {what} has shape {tuple(t.shape)}, expected {shape}")


def _load_saelens(path: Path) -> Encoder:
    cfg = _read_cfg(path)
    w = _read_safetensors(path / "sae_weights.safetensors")
    _need(w, ["W_enc", "W_dec", "b_dec"], path)
    d_in, F = w["W_enc"].shape
    _check_shape(w["W_dec"], (F, d_in), "W_dec", path)
    for key, want in (("d_in", d_in), ("d_sae", F)):
        if key in cfg and int(cfg[key]) != want:
            raise InputError(f"SAE {path}: cfg.json says {key}={cfg[key]} but the weights have {want}")
    arch = str(cfg.get("architecture", "standard")).lower()
    act_fn = str(cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))).lower()
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch in ("standard", "relu") and act_fn == "topk":
        arch = "topk"
    if arch == "relu":
        arch = "standard"
    if arch not in ("standard", "topk", "jumprelu"):
        raise InputError(f"SAE {path}: architecture {arch!r} is not supported (standard, topk, jumprelu)")
    if arch == "topk" and not k:
        raise InputError(f"SAE {path}: topk architecture but cfg.json gives no k")
    threshold = None
    if arch == "jumprelu":
        _need(w, ["threshold"], path)
        threshold = w["threshold"]
    norm = str(cfg.get("normalize_activations", "none") or "none")
    scale = None
    if norm == "expected_average_only_in":
        # The factor is folded into the weights by SAELens before saving, unless declared here.
        factor = cfg.get("norm_scaling_factor", cfg.get("scaling_factor"))
        scale = float(factor) if factor is not None else None
        norm = "none"
    elif norm not in ("none", "constant_norm_rescale", "layer_norm"):
        raise InputError(f"SAE {path}: normalize_activations={norm!r} is not supported")
    b_enc = w.get("b_enc", torch.zeros(F))
    return Encoder(
        name=cfg.get("neuronpedia_id") or path.name, format="saelens", path=str(path), d_in=d_in,
        n_features=F, architecture=arch, W_enc=w["W_enc"].contiguous(), b_enc=b_enc, W_dec=w["W_dec"],
        b_dec=w["b_dec"], threshold=threshold, k=int(k) if k else None,
        subtract_b_dec=bool(cfg.get("apply_b_dec_to_input", True)), normalize=norm, input_scale=scale,
        options={"hook_name": cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")},
    )


def _load_sparsify(path: Path) -> Encoder:
    cfg = _read_cfg(path)
    w = _read_safetensors(path / "sae.safetensors")
    _need(w, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], path)
    F, d_in = w["encoder.weight"].shape
    if "d_in" in cfg and int(cfg["d_in"]) != d_in:
        raise InputError(f"SAE {path}: cfg.json says d_in={cfg['d_in']} but encoder.weight has {d_in}")
    if cfg.get("num_latents") and int(cfg["num_latents"]) != F:
        raise InputError(f"SAE {path}: cfg.json says num_latents={cfg['num_latents']} but encoder.weight has {F}")
    _check_shape(w["W_dec"], (F, d_in), "W_dec", path)
    if not cfg.get("k"):
        raise InputError(f"SAE {path}: cfg.json gives no k (sparsify SAEs are TopK)")
    return Encoder(
        name=path.name, format="sparsify", path=str(path), d_in=d_in, n_features=F, architecture="topk",
        W_enc=w["encoder.weight"].T.contiguous(), b_enc=w["encoder.bias"], W_dec=w["W_dec"], b_dec=w["b_dec"],
        k=int(cfg["k"]), subtract_b_dec=not cfg.get("transcode", False),
    )


def _load_gemmascope(path: Path) -> Encoder:
    try:
        with np.load(path) as z:
            w = {k: torch.from_numpy(np.asarray(z[k], dtype=np.float32)) for k in z.files}
    except Exception as e:
        raise InputError(f"SAE weights {path}: unreadable or corrupt npz file ({e})") from None
    _need(w, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], path)
    d_in, F = w["W_enc"].shape
    _check_shape(w["W_dec"], (F, d_in), "W_dec", path)
    return Encoder(
        name=path.parent.name or path.stem, format="gemmascope", path=str(path), d_in=d_in, n_features=F,
        architecture="jumprelu", W_enc=w["W_enc"].contiguous(), b_enc=w["b_enc"], W_dec=w["W_dec"],
        b_dec=w["b_dec"], threshold=w["threshold"],
    )
