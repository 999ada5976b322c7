"""Input checks shared by the metrics: every bad input is a MetricInputError naming the argument."""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

from selectbench.core.errors import UserError


class MetricInputError(UserError, ValueError):
    """Input to a metric has the wrong shape, range or type."""


def _np(x) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, possibly on an accelerator
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _float_array(x, name: str, ndim: int, *, finite: bool = True) -> np.ndarray:
    a = _np(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise MetricInputError(f"{name}: expected numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if ndim == 2 and a.ndim == 1 and a.size == 0:
        a = a.reshape(0, 0)  # np.array([]) is a common spelling of "no rows"
    if a.ndim != ndim:
        raise MetricInputError(f"{name}: expected a {ndim}-D array, got shape {a.shape}")
    if finite and a.size and not np.isfinite(a).all():
        raise MetricInputError(f"{name}: contains NaN or inf")
    return a


def _int_array(x, name: str, *, lo: int | None = 0, hi: int | None = None) -> np.ndarray:
    """1-D integer labels in [lo, hi); float input is accepted only if integral."""
    a = _np(x)
    if a.ndim != 1:
        raise MetricInputError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if a.size == 0:
        return a.astype(np.int64)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise MetricInputError(f"{name}: expected integer labels, got dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.integer):
        if not np.isfinite(a).all() or not np.all(a == np.round(a)):
            raise MetricInputError(f"{name}: expected integer labels, got non-integral values")
    a = a.astype(np.int64)
    if lo is not None and a.min() < lo:
        raise MetricInputError(f"{name}: value {int(a.min())} is below {lo}")
    if hi is not None and a.max() >= hi:
        raise MetricInputError(f"{name}: value {int(a.max())} is out of range for {hi} classes")
    return a


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise MetricInputError(f"num_classes: expected a positive int, got {num_classes!r}")
    return int(num_classes)


def _counts(counts, name: str = "counts") -> np.ndarray:
    c = _float_array(counts, name, 1)
    if (c < 0).any():
        raise MetricInputError(f"{name}: negative count {c.min()}")
    return c


def _z(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise MetricInputError(f"alpha: expected a value in (0, 1), got {alpha!r}")
    return NormalDist().inv_cdf(1.0 - alpha / 2.0)  # stdlib: scipy.stats costs 0.6 s to import per stage
