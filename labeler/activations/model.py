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


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def model_config(name_or_path: str):
    """The model's ``transformers`` config (cheap: no weights), with load_model's errors."""
    from transformers import AutoConfig

    _quiet_transformers()
    local = Path(name_or_path).expanduser()
    if (name_or_path.startswith((".", "/", "~")) or local.exists()) and not (local / "config.json").exists():
        raise InputError(f"model {name_or_path!r}: no config.json there (not a transformers model folder)")
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise InputError(f"model {name_or_path!r}: cannot load its config ({e})") from None


def _model_class(config):
    """Decoders load with their LM head (for output-side evidence), everything else bare."""
    from transformers import AutoModel, AutoModelForCausalLM

    archs = " ".join(getattr(config, "architectures", None) or [])
    is_causal = "CausalLM" in archs or "LMHeadModel" in archs or getattr(config, "is_decoder", False)
    return AutoModelForCausalLM if is_causal else AutoModel


def load_model(name_or_path: str, *, device: str = "cpu", dtype: str = "float32"):
    """(model, tokenizer). Decoder models load with their LM head (for output-side evidence)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    config = model_config(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as e:
        raise InputError(f"model {name_or_path!r}: cannot load config/tokenizer ({e})") from None
    cls = _model_class(config)
    try:
        model = cls.from_pretrained(name_or_path, dtype=parse_dtype(dtype))
    except (OSError, ValueError) as e:
        if cls is AutoModelForCausalLM:
            model = AutoModel.from_pretrained(name_or_path, dtype=parse_dtype(dtype))
        else:
            raise InputError(f"model {name_or_path!r}: cannot load weights ({e})") from None
    model.eval().to(device)
    return model, tokenizer


def module_names(config) -> tuple[list[str], str]:
    """(every module path, the base model's prefix) of the model ``load_model`` builds for this
    config, built on the meta device: no weights are read or allocated."""
    cls = _model_class(config)
    with torch.device("meta"):
        try:
            model = cls.from_config(config)
        except ValueError:  # a config with no CausalLM class: load_model falls back the same way
            from transformers import AutoModel

            model = AutoModel.from_config(config)
    return [n for n, _ in model.named_modules()], getattr(model, "base_model_prefix", "")


def resolve_hook(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The module called ``name`` (also relative to the base model, or by a unique path
    suffix); unknown names list module names that would work."""
    from labeler.activations.hookpoints import find_hookpoint, is_tl_name, match_module

    modules = dict(model.named_modules())
    base = getattr(model, "base_model_prefix", "")
    found = match_module(name, modules, base) if name else None
    if found is not None:
        return modules[found]
    config = getattr(model, "config", None)
    if is_tl_name(name) and config is not None:
        # a TransformerLens name also fixes input vs output, which a module alone cannot carry
        point = find_hookpoint(name, config, list(modules), base_prefix=base)
        raise ConfigError(f"hookpoint {name!r} is a TransformerLens hook name: it is the {point.io} of "
                          f"module {point.module!r}; pass hook={point.module!r}, hook_io={point.io!r} "
                          f"(`labeler collect --hook` maps it for you)")
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
    """A model plus one or more hookpoints: ``activations(input_ids)`` -> [batch, seq, d] at
    ``hook``; ``activations_all`` -> one tensor per hookpoint (``hook``, then ``also``), from a
    single forward pass that stops once the deepest of them has been reached."""

    model: torch.nn.Module
    hook: str
    hook_io: str = "output"  # "output" | "input"
    also: tuple[tuple[str, str], ...] = ()  # more (hook, hook_io) pairs read in the same pass

    def __post_init__(self) -> None:
        self.points = list(dict.fromkeys([(self.hook, self.hook_io), *self.also]))
        for _, io in self.points:
            if io not in ("output", "input"):
                raise ConfigError(f"--hook-io must be 'output' or 'input', not {io!r}")
        self.modules = [resolve_hook(self.model, name) for name, _ in self.points]
        self.module = self.modules[0]
        self.device = next(self.model.parameters()).device

    @torch.inference_mode()
    def activations(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.activations_all(input_ids)[0]

    @torch.inference_mode()
    def activations_all(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        got: dict[int, torch.Tensor] = {}

        def keep(i: int, x: torch.Tensor) -> None:
            got.setdefault(i, x)
            if len(got) == len(self.points):
                raise _ReachedHook(x)  # the deepest hookpoint: the rest of the model never runs

        def grab_output(i):
            return lambda _m, _args, out: keep(i, out[0] if isinstance(out, (tuple, list)) else out)

        def grab_input(i):
            return lambda _m, args, kwargs: keep(i, args[0] if args else next(iter(kwargs.values())))

        handles = []
        for i, (module, (_, io)) in enumerate(zip(self.modules, self.points)):
            if io == "output":
                handles.append(module.register_forward_hook(grab_output(i)))
            else:
                handles.append(module.register_forward_pre_hook(grab_input(i), with_kwargs=True))
        try:
            kwargs = {"use_cache": False} if _is_causal_lm(self.model) else {}
            self.model(input_ids=input_ids.to(self.device), **kwargs)
        except _ReachedHook:
            return [got[i] for i in range(len(self.points))]
        finally:
            for h in handles:
                h.remove()
        missing = [self.points[i][0] for i in range(len(self.points)) if i not in got]
        raise ConfigError(f"hookpoint {missing[0]!r} was never reached in the forward pass")

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
