"""Subject model: load any ``transformers`` model and read one module's activations.

The forward pass stops at the hookpoint: a forward hook raises a private exception carrying
the tensor, so the layers after it never run.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import torch

from labeler.core.errors import ConfigError, InputError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class _ReachedHook(Exception):
    """Raised inside the hook to abort the rest of the forward pass."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


def parse_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ConfigError(f"unknown dtype {name!r}; choose one of {sorted(_DTYPES)}") from None


def load_model(name_or_path: str, *, device: str = "cpu", dtype: str = "float32"):
    """(model, tokenizer). Decoder models load with their LM head (for output-side evidence)."""
    import transformers
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    local = Path(name_or_path).expanduser()
    if (name_or_path.startswith((".", "/", "~")) or local.exists()) and not (local / "config.json").exists():
        raise InputError(f"model {name_or_path!r}: no config.json there (not a transformers model folder)")
    try:
        config = AutoConfig.from_pretrained(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as e:
        raise InputError(f"model {name_or_path!r}: cannot load config/tokenizer ({e})") from None
    archs = " ".join(getattr(config, "architectures", None) or [])
    is_causal = "CausalLM" in archs or "LMHeadModel" in archs or getattr(config, "is_decoder", False)
    cls = AutoModelForCausalLM if is_causal else AutoModel
    try:
        model = cls.from_pretrained(name_or_path, dtype=parse_dtype(dtype))
    except (OSError, ValueError) as e:
        if cls is AutoModelForCausalLM:
            model = AutoModel.from_pretrained(name_or_path, dtype=parse_dtype(dtype))
        else:
            raise InputError(f"model {name_or_path!r}: cannot load weights ({e})") from None
    model.eval().to(device)
    return model, tokenizer


def resolve_hook(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The module called ``name``; unknown names list the nearest existing ones."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    # Accept names written for the bare model (``layers.3``) or with the base prefix.
    base = getattr(model, "base_model_prefix", "")
    for cand in (f"{base}.{name}", name.removeprefix(f"{base}.")):
        if cand in modules and cand:
            return modules[cand]
    near = difflib.get_close_matches(name, [n for n in modules if n], n=6, cutoff=0.4)
    hint = f"; nearest module names: {', '.join(near)}" if near else ""
    raise ConfigError(f"unknown hookpoint {name!r} in {type(model).__name__}{hint}")


def module_width(module: torch.nn.Module, hook_io: str) -> int | None:
    """Best guess of a module's input/output width from its own weights (None if unknown)."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features if hook_io == "input" else module.out_features
    return None


@dataclass
class HookedModel:
    """A model plus one hookpoint: ``activations(input_ids)`` -> [batch, seq, d]."""

    model: torch.nn.Module
    hook: str
    hook_io: str = "output"  # "output" | "input"

    def __post_init__(self) -> None:
        if self.hook_io not in ("output", "input"):
            raise ConfigError(f"--hook-io must be 'output' or 'input', not {self.hook_io!r}")
        self.module = resolve_hook(self.model, self.hook)
        self.device = next(self.model.parameters()).device

    @torch.inference_mode()
    def activations(self, input_ids: torch.Tensor) -> torch.Tensor:
        def grab_output(_m, _args, out):
            raise _ReachedHook(out[0] if isinstance(out, (tuple, list)) else out)

        def grab_input(_m, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()))
            raise _ReachedHook(x)

        if self.hook_io == "output":
            handle = self.module.register_forward_hook(grab_output)
        else:
            handle = self.module.register_forward_pre_hook(grab_input, with_kwargs=True)
        try:
            kwargs = {"use_cache": False} if _is_causal_lm(self.model) else {}
            self.model(input_ids=input_ids.to(self.device), **kwargs)
        except _ReachedHook as hit:
            return hit.tensor
        finally:
            handle.remove()
        raise ConfigError(f"hookpoint {self.hook!r} was never reached in the forward pass")

    def d_model(self) -> int:
        x = self.activations(torch.zeros(1, 2, dtype=torch.long))
        return int(x.shape[-1])


def _is_causal_lm(model: torch.nn.Module) -> bool:
    name = type(model).__name__
    return "CausalLM" in name or "LMHead" in name


def output_embedding(model: torch.nn.Module) -> torch.Tensor | None:
    """The unembedding matrix [vocab, d_model], if the model has one."""
    get = getattr(model, "get_output_embeddings", None)
    emb = get() if get else None
    return emb.weight if emb is not None and hasattr(emb, "weight") else None
