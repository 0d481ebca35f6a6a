"""Nearest features by decoder cosine similarity, computed once per store with a blocked matmul.

``neighbours.safetensors`` holds ``indices`` int32 [F, N] and ``values`` float32 [F, N]: for each
feature the N others whose unit decoder directions have the highest cosine with its own, best
first, itself excluded (ties: lower index first).  Memory is bounded by one
[row_block, col_block] block of similarities, whatever F is.
"""

from __future__ import annotations

import torch

DEFAULT_NEIGHBOURS = 32


@torch.inference_mode()
def nearest_by_cosine(unit: torch.Tensor, n: int = DEFAULT_NEIGHBOURS, *, row_block: int = 2048,
                      col_block: int = 32768, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(indices int32 [F, n], values float32 [F, n]) for unit-norm rows ``unit`` [F, d]."""
    F = unit.shape[0]
    n = min(n, F - 1)
    idx_out = torch.empty((F, max(n, 0)), dtype=torch.int32)
    val_out = torch.empty((F, max(n, 0)), dtype=torch.float32)
    if n <= 0:
        return idx_out, val_out
    for r0 in range(0, F, row_block):
        r1 = min(F, r0 + row_block)
        rows = unit[r0:r1].to(device, torch.float32)
        best_v = torch.full((r1 - r0, n), -float("inf"), device=device)
        best_i = torch.full((r1 - r0, n), -1, dtype=torch.int64, device=device)
        for c0 in range(0, F, col_block):
            c1 = min(F, c0 + col_block)
            sims = rows @ unit[c0:c1].to(device, torch.float32).T
            lo, hi = max(r0, c0), min(r1, c1)
            if lo < hi:  # the diagonal: a feature is not its own neighbour
                d = torch.arange(lo, hi, device=device)
                sims[d - r0, d - c0] = -float("inf")
            k = min(n, c1 - c0)
            v, i = torch.topk(sims, k, dim=1)
            both_v = torch.cat([best_v, v], dim=1)
            both_i = torch.cat([best_i, i + c0], dim=1)
            # highest similarity first, then lowest index: a stable total order
            order = torch.argsort(both_i, dim=1, stable=True)
            both_v, both_i = both_v.gather(1, order), both_i.gather(1, order)
            top = torch.argsort(-both_v, dim=1, stable=True)[:, :n]
            best_v, best_i = both_v.gather(1, top), both_i.gather(1, top)
        idx_out[r0:r1] = best_i.to(torch.int32).cpu()
        val_out[r0:r1] = best_v.cpu()
    return idx_out, val_out
