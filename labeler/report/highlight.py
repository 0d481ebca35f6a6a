"""Activation-highlighted contexts as inline HTML (shared by reports and feature pages)."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

from labeler.records import ActivationExample, FeatureRecord


@dataclass
class HighlightedContext:
    html: Markup
    max_activation: float
    window: int
    split: str
    kind: str


def highlight_tokens(tokens: list[str], activations: list[float], scale: float) -> Markup:
    """Each token in a span whose background opacity is its activation / scale.

    Whitespace is kept visible (``white-space: pre-wrap`` in the CSS), and the activation is
    in the title so hovering shows the number.
    """
    scale = scale if scale > 0 else 1.0
    parts = []
    for tok, act in zip(tokens, activations):
        level = max(0.0, min(1.0, act / scale))
        text = escape(tok.replace("\n", "⏎"))
        if level > 0:
            parts.append(
                f'<span class="tok act" style="background: rgba(255,120,0,{level:.2f})" '
                f'title="{act:.3g}">{text}</span>'
            )
        else:
            parts.append(f'<span class="tok">{text}</span>')
    return Markup("".join(parts))


def highlight_example(ex: ActivationExample, scale: float | None = None) -> HighlightedContext:
    return HighlightedContext(
        html=highlight_tokens(ex.tokens, ex.activations, scale or ex.max_activation),
        max_activation=ex.max_activation, window=ex.window, split=ex.split, kind=ex.kind,
    )


def contexts(record: FeatureRecord, kinds: tuple[str, ...], limit: int) -> list[HighlightedContext]:
    """Up to ``limit`` examples of the given kinds over all splits, scaled to the feature's max."""
    exs = [e for e in record.examples if e.kind in kinds]
    if "top" in kinds:
        exs.sort(key=lambda e: -e.max_activation)
    scale = record.stats.max or max((e.max_activation for e in record.examples), default=1.0)
    return [highlight_example(e, scale) for e in exs[:limit]]
