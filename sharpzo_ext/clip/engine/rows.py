"""Products computed alike for every row, however many rows are beside it.

Note [Products by row]
A forward-only optimizer compares candidates that share a batch, so a candidate's loss must not
depend on its neighbours (Note [A candidate's context alone], Note [Row-wise int8]). A matrix
product is row by row in exact arithmetic, but the BLAS picks its kernel by the product's shape:
with MKL on an AMD EPYC (Zen 4), a product of 1, 2, 3, 5, 6, 7, 9, 10 or 11 rows rounds
differently from the same rows inside a larger one (from 12 rows on, every row gets the same
bits). A candidate alone (its five class features, say) and the same candidate in a population
then differed in their last bits. So the text tower's products whose rows can belong to
different candidates are computed with at least MIN_ROWS rows: fewer are padded with zero rows,
which are dropped after. Only products of fewer than MIN_ROWS rows pay for it, and they are
small.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["MIN_ROWS", "by_rows"]

MIN_ROWS = 16


def by_rows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """fn(x) for a row-wise fn of x (rows, ...), computed on at least MIN_ROWS rows (Note
    [Products by row])."""
    if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
        return fn(x)  # an exported graph takes any number of rows: onnxruntime's own kernels
    rows = x.shape[0]
    if rows >= MIN_ROWS:
        return fn(x)
    return fn(torch.cat([x, x.new_zeros(MIN_ROWS - rows, *x.shape[1:])]))[:rows]
