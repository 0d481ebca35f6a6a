"""Nearest features by decoder cosine similarity, computed once per store with a blocked matmul.

``neighbours.safetensors`` holds ``indices`` int32 [F, N] and ``values`` float32 [F, N]: for each
feature the N others whose unit decoder directions have the highest cosine with its own, best
first, itself excluded.  The similarity matrix is symmetric, so only the
blocks on and above the diagonal are computed (half the F^2 d work), each updating the running
top-N of its rows and of its columns; memory is one [block, block] tile plus the [F, N] result.
"""

from __future__ import annotations

import torch

DEFAULT_NEIGHBOURS = 32


def _merge(best_v: torch.Tensor, best_i: torch.Tensor, v: torch.Tensor, i: torch.Tensor, n: int):
    """Top-n of two candidate lists per row, highest value first."""
    both_v, both_i = torch.cat([best_v, v], dim=1), torch.cat([best_i, i], dim=1)
    top_v, top = torch.topk(both_v, n, dim=1)
    return top_v, both_i.gather(1, top)


@torch.inference_mode()
def nearest_by_cosine(unit: torch.Tensor, n: int = DEFAULT_NEIGHBOURS, *, block: int = 4096,
                      device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(indices int32 [F, n], values float32 [F, n]) for unit-norm rows ``unit`` [F, d]."""
    F = unit.shape[0]
    n = max(0, min(n, F - 1))
    best_v = torch.full((F, n), -float("inf"), device=device)
    best_i = torch.full((F, n), F, dtype=torch.int64, device=device)
    if n == 0:
        return best_i.to(torch.int32).cpu(), best_v.cpu()
    starts = list(range(0, F, block))
    for r0 in starts:
        r1 = min(F, r0 + block)
        rows = unit[r0:r1].to(device, torch.float32)
        for c0 in starts:
            if c0 < r0:
                continue
            c1 = min(F, c0 + block)
            sims = rows @ unit[c0:c1].to(device, torch.float32).T
            if c0 == r0:  # a feature is not its own neighbour
                d = torch.arange(r1 - r0, device=device)
                sims[d, d] = -float("inf")
            k = min(n, c1 - c0)
            v, i = torch.topk(sims, k, dim=1)
            best_v[r0:r1], best_i[r0:r1] = _merge(best_v[r0:r1], best_i[r0:r1], v, i + c0, n)
            if c0 != r0:  # the same tile seen from the columns' side
                k = min(n, r1 - r0)
                v, i = torch.topk(sims.T.contiguous(), k, dim=1)
                best_v[c0:c1], best_i[c0:c1] = _merge(best_v[c0:c1], best_i[c0:c1], v, i + r0, n)
    return best_i.to(torch.int32).cpu(), best_v.cpu()
