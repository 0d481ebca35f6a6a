"""Matplotlib figures as base64 PNG data URIs, so an HTML report needs no other file."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from labeler.report.data import ReportData  # noqa: E402
from labeler.report.stats import Agreement, Analysis, ChanceLine, Distribution, per_feature_scores  # noqa: E402

CHANCE_LABEL = "chance (shuffled explanations)"


def to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def score_distribution(method: str, dists: list[Distribution], chance: ChanceLine | None) -> str:
    """Histogram per configuration, with the shuffled-explanation mean as a dashed line."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    all_vals = [v for d in dists for v in d.values] + (chance.values if chance else [])
    lo, hi = (min(all_vals), max(all_vals)) if all_vals else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 21)
    for d in dists:
        if d.values:
            ax.hist(d.values, bins=bins, alpha=0.55, label=f"{d.label} (n={d.n}, mean={d.mean:.3f})")
    if chance and chance.mean is not None:
        ax.axvline(chance.mean, color="black", linestyle="--", linewidth=1.5,
                   label=f"{CHANCE_LABEL}: {chance.mean:.3f} (n={chance.n})")
    ax.set_xlabel(f"{method} score")
    ax.set_ylabel("features")
    ax.set_title(f"{method}: score distribution")
    ax.legend(fontsize=7, loc="best")
    return to_data_uri(fig)


def paired_scatter(data: ReportData, method: str, a: str, b: str) -> str:
    sa, sb = per_feature_scores(data.scores, method, a), per_feature_scores(data.scores, method, b)
    common = sorted(set(sa) & set(sb))
    x, y = [sa[f] for f in common], [sb[f] for f in common]
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    ax.scatter(x, y, s=14, alpha=0.7)
    if x:
        lo, hi = min(x + y), max(x + y)
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1, linestyle=":")
    ax.set_xlabel(a, fontsize=8)
    ax.set_ylabel(b, fontsize=8)
    ax.set_title(f"{method}, same {len(common)} features", fontsize=9)
    return to_data_uri(fig)


def agreement_heatmap(ag: Agreement) -> str:
    k = len(ag.methods)
    m = np.array([[np.nan if v is None else v for v in row] for row in ag.rho], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 1.0 * k, 1.0 + 0.9 * k))
    im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(k), ag.methods, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(k), ag.methods, fontsize=8)
    for i in range(k):
        for j in range(k):
            txt = "n/a" if np.isnan(m[i, j]) else f"{m[i, j]:.2f}"
            dark = not np.isnan(m[i, j]) and abs(m[i, j]) > 0.6
            ax.text(j, i, f"{txt}\nn={ag.n[i][j]}", ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="Spearman ρ")
    ax.set_title("agreement between scorers", fontsize=9)
    return to_data_uri(fig)


def score_vs_feature(data: ReportData, analysis: Analysis, method: str) -> str:
    """Primary configuration's score against density (log x) and max activation."""
    label = analysis.primary_label
    per_f = per_feature_scores(data.scores, method, label) if label else {}
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.0), sharey=True)
    for ax, attr, xlabel in ((axes[0], "density", "feature density (log)"),
                             (axes[1], "max_activation", "max activation")):
        pts = [(getattr(data.features[f], attr), v) for f, v in per_f.items()
               if f in data.features and getattr(data.features[f], attr) is not None]
        if pts:
            x, y = zip(*pts)
            ax.scatter(x, y, s=12, alpha=0.7)
            if attr == "density" and min(x) > 0:
                ax.set_xscale("log")
        chance = analysis.chance.get(method)
        if chance and chance.mean is not None:
            ax.axhline(chance.mean, color="black", linestyle="--", linewidth=1, label=CHANCE_LABEL)
        ax.set_xlabel(xlabel, fontsize=8)
    axes[0].set_ylabel(f"{method} score", fontsize=8)
    fig.suptitle(f"{method} vs feature statistics ({label})", fontsize=9)
    return to_data_uri(fig)


def cost_bars(analysis: Analysis) -> str:
    labels = [c.label for c in analysis.costs]
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 0.8 + 0.45 * max(len(labels), 1)))
    axes[0].barh(labels, [c.cost_per_feature for c in analysis.costs], color="tab:green")
    axes[0].set_xlabel("USD per feature (explain + score)", fontsize=8)
    axes[1].barh(labels, [c.tokens_per_feature for c in analysis.costs], color="tab:purple")
    axes[1].set_xlabel("LLM tokens per feature", fontsize=8)
    axes[1].set_yticks([])
    for ax in axes:
        ax.tick_params(labelsize=7)
    return to_data_uri(fig)
