"""Student-t quantiles and confidence intervals without SciPy.

SciPy is not a core dependency, so the two places that need a Student-t interval
(:func:`pupsnr_dask.query.spread` and :func:`pupsnr_dask.advise.compare_paired`) share the
exact implementation here.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["t_half_width", "t_quantile"]


def t_quantile(q: float, df: int) -> float:
    """Quantile ``q`` of Student's t distribution with ``df`` degrees of freedom.

    Exact closed form of ``P(|T| <= t)`` for integer ``df`` (Abramowitz & Stegun 26.7.3-4),
    inverted by bisection to a relative precision of about 1e-13; no SciPy needed.

    Parameters
    ----------
    q : float
        Probability, in (0, 1).
    df : int
        Degrees of freedom, a positive integer.

    Returns
    -------
    float
        ``t`` such that ``P(T <= t) = q``; negative below ``q = 0.5``.

    Raises
    ------
    ValueError
        If ``q`` is not in (0, 1) or ``df`` is not a positive integer.

    Examples
    --------
    >>> round(t_quantile(0.975, 1), 4), round(t_quantile(0.975, 10), 4)
    (12.7062, 2.2281)
    >>> t_quantile(0.025, 10) == -t_quantile(0.975, 10)
    True
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q!r}")
    if int(df) != df or df < 1:
        raise ValueError(f"df must be a positive integer, got {df!r}")
    if q == 0.5:
        return 0.0
    upper = _upper_quantile(max(q, 1.0 - q), int(df))
    return upper if q > 0.5 else -upper


def t_half_width(std: np.ndarray | float, n: int, confidence: float) -> np.ndarray | float:
    """Half-width of the two-sided Student-t confidence interval of a mean.

    Parameters
    ----------
    std : array_like or float
        Sample standard deviation (``ddof=1``) of the ``n`` values.
    n : int
        Number of values, at least 2.
    confidence : float
        Coverage of the interval, in (0, 1), e.g. 0.95.

    Returns
    -------
    ndarray or float
        ``t_quantile(0.5 + confidence / 2, n - 1) * std / sqrt(n)``.

    Examples
    --------
    >>> round(t_half_width(1.0, 11, 0.95), 4)
    0.6718
    """
    return t_quantile(0.5 + confidence / 2, int(n) - 1) * std / math.sqrt(n)


@lru_cache(maxsize=256)
def _upper_quantile(q: float, df: int) -> float:
    """The quantile for ``q`` in (0.5, 1), by bisection on :func:`_t_central`."""
    target = 2.0 * q - 1.0
    lo, hi = 0.0, 1.0
    while _t_central(hi, df) < target:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_central(mid, df) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def _t_central(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``df``."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:
        k = np.arange(1, (df - 1) // 2)  # terms c, (2/3) c^3, (2*4)/(3*5) c^5, ...
        terms = np.cumprod(np.concatenate([[1.0], 2 * k / (2 * k + 1) * c2]))
        return (
            (2 / math.pi) * (theta + s * math.sqrt(c2) * terms.sum())
            if df > 1
            else (2 * theta / math.pi)
        )
    k = np.arange(1, df // 2)  # terms 1, (1/2) c^2, (1*3)/(2*4) c^4, ...
    terms = np.cumprod(np.concatenate([[1.0], (2 * k - 1) / (2 * k) * c2]))
    return s * float(terms.sum())
