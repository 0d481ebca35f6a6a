"""Steering: change one feature at the hookpoint and watch what the model writes.

Two interventions on feature ``i`` of a store's SAE, applied at the store's hookpoint to every
position the model processes (the prompt, then each generated token):

- ``add``: ``h' = h + alpha * W_dec[i]``: the feature's decoder row, ``alpha`` in the feature's
  own activation units (``alpha = 8`` adds what the feature writes when it fires at 8);
- ``clamp``: encode ``h``, set feature ``i`` to ``c``, decode, add back the error term
  ``h - decode(f)``.  Decoding is linear, so this is ``h + (c - f_i(h)) * W_dec[i]``, which is
  what is computed: only feature ``i``'s activation is needed, and a token where the feature
  already equals ``c`` is left bit-for-bit unchanged.

Both are written in the SAE's input space.  An SAE that scales its inputs (activation
normalisation) decodes in the scaled space, so the change is divided by the token's scale
before it is added to the hookpoint.  For ``neurons`` the "decoder row" is the unit's own axis.

Only decoder models (with a language-model head) can be steered; reading a feature's
activations on any text works for every model.  Generation is ``transformers``' ``generate``
under the hook, seeded, so a steered and an unsteered run differ by the intervention alone.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Literal

import torch

from labeler.activations.formats import Encoder, load_encoder
from labeler.activations.model import HookedModel
from labeler.core.errors import ConfigError, InputError

MODES = ("add", "clamp")
MAX_PROMPT_TOKENS = 512
"""The longest prompt (in tokens) steering and activation reading accept."""


@dataclass(frozen=True)
class Intervention:
    """One change to one feature at the hookpoint."""

    feature: int
    """Feature index in the store's SAE."""
    mode: Literal["add", "clamp"] = "add"
    """``add``: add ``value`` times the decoder row; ``clamp``: set the activation to ``value``."""
    value: float = 0.0
    """The strength (``add``) or the activation to hold the feature at (``clamp``)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"steering mode must be one of {MODES}, not {self.mode!r}")
        if not math.isfinite(self.value):
            raise InputError(f"steering value must be a finite number, not {self.value!r}")

    def describe(self) -> str:
        if self.mode == "add":
            return f"feature {self.feature} {'+' if self.value >= 0 else ''}{self.value:g}"
        return f"feature {self.feature} clamped to {self.value:g}"


@dataclass
class SteeringResult:
    """Steered and unsteered continuations of one prompt, made with the same seed."""

    prompt: str
    intervention: Intervention
    steered: list[str]
    """One continuation per sample, with the intervention."""
    unsteered: list[str]
    """The same samples without it."""
    max_new_tokens: int
    temperature: float
    seed: int


@dataclass
class StrengthSearch:
    """The ``add`` strength that moves the next-token distribution by a target KL divergence."""

    strength: float
    kl: float
    """Mean KL(unsteered || steered) of the next-token distributions at that strength (nats)."""
    target: float
    reached: bool
    """False when even the largest strength tried stayed below the target."""
    trace: list[tuple[float, float]] = field(default_factory=list)
    """Every (strength, KL) evaluated, in order."""


def constant_input_scale(encoder: Encoder) -> float | None:
    """The factor the SAE's preprocessing multiplies every input by, when it is one constant
    (1.0 for most SAEs); None when it depends on the token (norm-based normalisation)."""
    g = torch.Generator().manual_seed(0)
    device = encoder.b_dec.device if encoder.b_dec is not None else "cpu"
    x = (torch.randn(4, encoder.d_in, generator=g) * torch.tensor([[0.5], [1.0], [3.0], [10.0]])).to(device)
    n = encoder.preprocess(x) - encoder.preprocess(torch.zeros_like(x[:1]))
    if torch.allclose(n, x, rtol=1e-5, atol=1e-5):
        return 1.0
    a = float((n * x).sum() / (x * x).sum())
    return a if torch.allclose(n, a * x, rtol=1e-4, atol=1e-5) else None


class Subject:
    """A store's subject model at its hookpoint with its SAE: steer it, read activations.

    ``lock`` serialises every forward pass that installs a hook (hooks are state of the model's
    modules, shared by all threads); pass the same lock to every Subject of one model."""

    def __init__(self, model: torch.nn.Module, tokenizer, encoder: Encoder, *, hook: str, hook_io: str = "output",
                 prefix: tuple[int, ...] = (), suffix: tuple[int, ...] = (), lock: threading.Lock | None = None):
        self.hooked = HookedModel(model, hook, hook_io)
        self.model, self.tokenizer = model, tokenizer
        self.encoder = encoder.to(self.hooked.device)
        self.prefix, self.suffix = tuple(prefix), tuple(suffix)
        self.lock = lock or threading.Lock()
        self._scale = constant_input_scale(self.encoder)
        config = getattr(model, "config", None)
        self.max_positions = int(getattr(config, "max_position_embeddings", None)
                                 or getattr(config, "n_positions", None) or MAX_PROMPT_TOKENS)

    @classmethod
    def from_manifest(cls, manifest: dict, model: torch.nn.Module, tokenizer,
                      lock: threading.Lock | None = None) -> "Subject":
        """The subject of a store: its hookpoint, its SAE (``manifest["sae"]["path"]``) and the
        special tokens collect framed every window with."""
        m, sae, frame = manifest["model"], manifest["sae"], manifest.get("settings", {}).get("frame", {})
        spec = str(sae["name"]) if sae["path"] == "neurons" else str(sae["path"])  # neurons[:signs]
        encoder = load_encoder(spec, hook=m["hook"], d_model=int(m["d_model"]))
        return cls(model, tokenizer, encoder, hook=m["hook"], hook_io=m.get("hook_io", "output"),
                   prefix=tuple(frame.get("prefix", ())), suffix=tuple(frame.get("suffix", ())), lock=lock)

    # -- what can be done ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.hooked.device

    @property
    def can_generate(self) -> bool:
        can = getattr(self.model, "can_generate", None)
        return bool(can()) if callable(can) else False

    def require_decoder(self) -> None:
        if not self.can_generate:
            raise InputError(
                f"the store's model is an encoder ({type(self.model).__name__}): steering needs a decoder "
                f"model with a language-model head (GPT-2, Llama, Pythia, ...); feature activations on "
                f"your text still work")

    def check_feature(self, feature: int) -> None:
        if not 0 <= int(feature) < self.encoder.n_features:
            raise InputError(f"feature {feature} is out of range: the SAE has {self.encoder.n_features} "
                             f"features (0..{self.encoder.n_features - 1})")

    # -- the intervention ----------------------------------------------------------------------
    def direction(self, feature: int) -> torch.Tensor:
        """What one unit of the feature's activation adds on decoding [d_in] (float32): its decoder
        row; the unit's own axis for neurons (pointing the other way for a neuron's negative side)."""
        self.check_feature(feature)
        enc = self.encoder
        if enc.W_dec is None:  # neurons: every unit of the hookpoint is a feature (or two: its sides)
            latent, side = int(feature) % enc.n_latents, int(feature) // enc.n_latents
            axis = torch.nn.functional.one_hot(torch.tensor(latent), enc.d_in).float().to(self.device)
            return -axis if enc.signs and enc.signs[side] == "neg" else axis
        row = enc.W_dec[int(feature)].float()
        # SAELens rescale_acts_by_decoder_norm: activations carry the row's norm, decoding divides it out
        return row / row.norm().clamp_min(1e-12) if enc.rescale_by_decoder_norm else row

    def token_scale(self, flat: torch.Tensor) -> torch.Tensor | float:
        """Per-token factor of the SAE's input preprocessing: ``preprocess(h)`` is ``s * (h - m)``
        up to a constant, with ``m`` a per-token mean (0 unless the SAE layer-normalises)."""
        if self._scale is not None:
            return self._scale
        n = self.encoder.preprocess(flat) - self.encoder.preprocess(torch.zeros_like(flat[:1]))
        xc, nc = flat - flat.mean(-1, keepdim=True), n - n.mean(-1, keepdim=True)
        s = nc.norm(dim=-1) / xc.norm(dim=-1).clamp_min(1e-12)
        if not torch.allclose(nc, s[:, None] * xc, rtol=1e-3, atol=1e-5 * float(nc.abs().max().clamp_min(1.0))):
            raise ConfigError(f"SAE {self.encoder.name!r}: its input preprocessing is not a per-token scaling, so "
                              f"a change in its decoder space cannot be mapped back to the hookpoint")
        return s.clamp_min(1e-12)

    def delta(self, h: torch.Tensor, iv: Intervention) -> torch.Tensor:
        """What the intervention adds to hookpoint activations ``h`` [..., d_in]."""
        flat = h.reshape(-1, h.shape[-1]).float()
        if iv.mode == "add":
            amount = torch.full((flat.shape[0],), float(iv.value), device=flat.device)
        else:
            f = self.encoder.encode(flat, features=(iv.feature, iv.feature + 1)).to_dense()[:, 0]
            amount = float(iv.value) - f
        scale = self.token_scale(flat)
        change = (amount / scale)[:, None] * self.direction(iv.feature)
        return change.reshape(h.shape).to(h.dtype)

    @contextmanager
    def intervening(self, iv: Intervention | None) -> Iterator[None]:
        """Every forward pass inside runs with ``iv`` applied at the hookpoint (None: untouched).
        The caller holds ``self.lock``."""
        if iv is None:
            yield
            return
        self.check_feature(iv.feature)
        if "transcoder" in self.encoder.architecture:
            raise ConfigError(f"SAE {self.encoder.name!r} is a transcoder: its decoder writes to the module's "
                              f"output, not to the hookpoint it reads, so it cannot be steered there")

        def on_output(_m, _args, out):
            if isinstance(out, (tuple, list)):
                return type(out)([out[0] + self.delta(out[0], iv), *out[1:]])
            return out + self.delta(out, iv)

        def on_input(_m, args, kwargs):
            if args:
                return (args[0] + self.delta(args[0], iv), *args[1:]), kwargs
            name = next(iter(kwargs))
            return args, {**kwargs, name: kwargs[name] + self.delta(kwargs[name], iv)}

        module = self.hooked.module
        if self.hooked.hook_io == "output":
            handle = module.register_forward_hook(on_output)
        else:
            handle = module.register_forward_pre_hook(on_input, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    # -- prompts -------------------------------------------------------------------------------
    def prompt_ids(self, text: str, *, suffix: bool = False) -> list[int]:
        """Token ids of ``text`` framed as collect framed its windows (BOS etc.)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        out = [*self.prefix, *ids, *(self.suffix if suffix else ())]
        if not ids:
            raise InputError("the text is empty: it gives no token")
        if len(out) > min(MAX_PROMPT_TOKENS, self.max_positions):
            raise InputError(f"the text is {len(out)} tokens long; at most {min(MAX_PROMPT_TOKENS, self.max_positions)} "
                             f"are accepted")
        return out

    def _batch(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and attention mask (generation continues every row at its end)."""
        rows = [self.prompt_ids(p) for p in prompts]
        width = max(len(r) for r in rows)
        pad = self.pad_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        return ids.to(self.device), mask.to(self.device)

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return next((t for t in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) if t is not None), 0)

    # -- running -------------------------------------------------------------------------------
    @torch.inference_mode()
    def next_token_logits(self, prompts: list[str], iv: Intervention | None = None) -> torch.Tensor:
        """Logits [len(prompts), vocab] of the token after each prompt."""
        self.require_decoder()
        ids, mask = self._batch(prompts)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        with self.lock, self.intervening(iv):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
        return out.logits[:, -1].float()

    def next_token_kl(self, prompts: list[str], iv: Intervention, clean: torch.Tensor | None = None) -> float:
        """Mean over prompts of KL(unsteered || steered) of the next-token distributions (nats)."""
        clean = self.next_token_logits(prompts) if clean is None else clean
        steered = self.next_token_logits(prompts, iv)
        p_log, q_log = torch.log_softmax(clean, -1), torch.log_softmax(steered, -1)
        return float((p_log.exp() * (p_log - q_log)).sum(-1).mean())

    @torch.inference_mode()
    def generate(self, prompts: list[str], iv: Intervention | None, *, max_new_tokens: int,
                 temperature: float = 0.0, seed: int = 0) -> list[str]:
        """One continuation per prompt (text after the prompt); greedy at temperature 0, else
        sampled from a generator seeded with ``seed`` (the global RNG is left as it was)."""
        self.require_decoder()
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0 or not math.isfinite(temperature):
            raise InputError(f"temperature must be >= 0, got {temperature}")
        ids, mask = self._batch(prompts)
        if ids.shape[1] + max_new_tokens > self.max_positions:
            raise InputError(f"prompt plus {max_new_tokens} new tokens is longer than the model's "
                             f"{self.max_positions} positions")
        sample = temperature > 0
        options = {"do_sample": True, "temperature": temperature, "top_k": 0} if sample else {"do_sample": False}
        devices = [self.device] if self.device.type == "cuda" else []
        with self.lock, torch.random.fork_rng(devices=devices), self.intervening(iv):
            torch.manual_seed(seed)
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      pad_token_id=self.pad_id, **options)
        new = out[:, ids.shape[1]:]
        return [self.tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                for row in new]

    @torch.inference_mode()
    def activations(self, text: str, feature: int) -> tuple[list[str], list[float]]:
        """The feature's activation on every token of ``text`` (framed as collect framed its
        windows; the special tokens around it are left out)."""
        self.check_feature(feature)
        ids = self.prompt_ids(text, suffix=True)
        content = slice(len(self.prefix), len(ids) - len(self.suffix))
        with self.lock:
            h = self.hooked.activations(torch.tensor([ids], dtype=torch.long))[0, content]
        values = self.encoder.encode(h.float(), features=(feature, feature + 1)).to_dense()[:, 0]
        tokens = [self.tokenizer.decode([t], clean_up_tokenization_spaces=False) for t in ids[content]]
        return tokens, [round(float(v), 4) for v in values.cpu()]


def steer(subject: Subject, prompt: str, iv: Intervention, *, max_new_tokens: int = 32, samples: int = 1,
          temperature: float = 0.7, seed: int = 0) -> SteeringResult:
    """Steered and unsteered continuations of ``prompt``, ``samples`` of each, same seed."""
    subject.require_decoder()
    subject.check_feature(iv.feature)
    if samples < 1:
        raise InputError(f"samples must be >= 1, got {samples}")
    prompts = [prompt] * samples
    kw = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    return SteeringResult(prompt=prompt, intervention=iv, steered=subject.generate(prompts, iv, **kw),
                          unsteered=subject.generate(prompts, None, **kw), max_new_tokens=max_new_tokens,
                          temperature=temperature, seed=seed)


def strength_for_kl(subject: Subject, prompts: list[str], feature: int, target: float, *, start: float = 1.0,
                    max_strength: float = 1e4, bisections: int = 8, tolerance: float = 0.05) -> StrengthSearch:
    """The ``add`` strength whose mean next-token KL on ``prompts`` is closest to ``target``:
    doubling from ``start`` until the KL passes the target, then bisecting."""
    if target <= 0 or not math.isfinite(target):
        raise ConfigError(f"the KL target must be a positive number of nats, got {target}")
    clean = subject.next_token_logits(prompts)
    trace: list[tuple[float, float]] = []

    def kl(alpha: float) -> float:
        value = subject.next_token_kl(prompts, Intervention(feature, "add", alpha), clean)
        trace.append((alpha, value))
        return value

    lo, hi = 0.0, min(max(float(start), 1e-6), max_strength)
    while kl(hi) < target and hi < max_strength:
        lo, hi = hi, min(hi * 2, max_strength)
    if trace[-1][1] >= target:
        for _ in range(bisections):
            if abs(trace[-1][1] - target) <= tolerance * target:
                break
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if kl(mid) < target else (lo, mid)
    best = min(trace, key=lambda t: abs(t[1] - target))
    return StrengthSearch(strength=best[0], kl=best[1], target=target,
                          reached=any(v >= target * (1 - tolerance) for _, v in trace), trace=trace)
