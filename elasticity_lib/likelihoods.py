"""Log-likelihoods of the Gaussian log-log demand model written on group statistics.

The functions take an array namespace ``xp`` (``numpy`` or ``pytensor.tensor``) so that
the very same formulas are evaluated inside a PyMC model and tested in NumPy against the
row-by-row likelihood and against SciPy's multivariate normal.

Notation for one group (a region or a store) with rows ``(x_i, y_i)``, ``x = log price``
and ``y = log quantity``: ``n`` rows, means ``mx, my`` and centred sums of squares and
cross-products ``cxx, cxy, cyy`` (see :class:`~elasticity_lib.prepare.GroupStats`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["residual_sum_of_squares", "normal_group_loglik", "marginal_group_loglik", "conditional_effects"]

LOG_2PI = float(np.log(2 * np.pi))


def residual_sum_of_squares(stats, alpha, beta):
    """Σ (y - alpha - beta x)² per group, from centred statistics (no cancellation of large sums)."""
    offset = stats.my - alpha - beta * stats.mx
    return stats.n * offset**2 + stats.cyy - 2 * beta * stats.cxy + beta**2 * stats.cxx


def normal_group_loglik(xp, stats, alpha, beta, sigma):
    """Sum over rows of log Normal(y | alpha + beta x, sigma), one value per group."""
    rss = residual_sum_of_squares(stats, alpha, beta)
    return -0.5 * stats.n * LOG_2PI - stats.n * xp.log(sigma) - 0.5 * rss / sigma**2


def _gram(stats):
    """Entries of X'X and X'y for the design [1, x] of each group."""
    g11 = stats.n
    g12 = stats.n * stats.mx
    g22 = stats.cxx + stats.n * stats.mx**2
    return g11, g12, g22


def _shrinkage(stats, m_alpha, m_beta, s11, s12, s22, sigma):
    """Quantities shared by the marginal likelihood and the conditional posterior.

    With prior theta ~ Normal(m, S) for (intercept, slope) and G = X'X, u = X'(y - X m):
    A = I + S G / sigma² and the posterior covariance is A⁻¹ S.
    """
    g11, g12, g22 = _gram(stats)
    sig2 = sigma**2
    a11 = 1 + (s11 * g11 + s12 * g12) / sig2
    a12 = (s11 * g12 + s12 * g22) / sig2
    a21 = (s12 * g11 + s22 * g12) / sig2
    a22 = 1 + (s12 * g12 + s22 * g22) / sig2
    det_a = a11 * a22 - a12 * a21
    # residuals at the prior mean, through the same centred statistics
    offset = stats.my - m_alpha - m_beta * stats.mx
    u1 = stats.n * offset
    u2 = stats.cxy - m_beta * stats.cxx + stats.n * stats.mx * offset
    # v = S u, w = A⁻¹ v = posterior-mean shift times sigma²
    v1 = s11 * u1 + s12 * u2
    v2 = s12 * u1 + s22 * u2
    w1 = (a22 * v1 - a12 * v2) / det_a
    w2 = (-a21 * v1 + a11 * v2) / det_a
    return dict(a11=a11, a12=a12, a21=a21, a22=a22, det_a=det_a, u1=u1, u2=u2, w1=w1, w2=w2, sig2=sig2)


def marginal_group_loglik(xp, stats, m_alpha, m_beta, s11, s12, s22, sigma):
    """log p(y_group | m, S, sigma) with the group's intercept and slope integrated out.

    The group effects theta ~ Normal(m, S) enter linearly, so the rows of a group are
    jointly Normal with covariance sigma² I + X S X'. Its log density needs only 2×2
    algebra on the group statistics (matrix determinant lemma and Woodbury identity).
    """
    k = _shrinkage(stats, m_alpha, m_beta, s11, s12, s22, sigma)
    rss = residual_sum_of_squares(stats, m_alpha, m_beta)
    quad = (rss - (k["u1"] * k["w1"] + k["u2"] * k["w2"]) / k["sig2"]) / k["sig2"]
    return -0.5 * stats.n * LOG_2PI - stats.n * xp.log(sigma) - 0.5 * xp.log(k["det_a"]) - 0.5 * quad


def conditional_effects(stats, m_alpha, m_beta, s11, s12, s22, sigma):
    """Mean and covariance of (intercept, slope) given the population parameters and the data.

    NumPy only; arguments broadcast (e.g. posterior draws × groups). Returns
    ``(mean_alpha, mean_beta, c11, c12, c22)``.
    """
    k = _shrinkage(stats, m_alpha, m_beta, s11, s12, s22, sigma)
    mean_alpha = m_alpha + k["w1"] / k["sig2"]
    mean_beta = m_beta + k["w2"] / k["sig2"]
    # covariance A⁻¹ S
    c11 = (k["a22"] * s11 - k["a12"] * s12) / k["det_a"]
    c12 = (k["a22"] * s12 - k["a12"] * s22) / k["det_a"]
    c22 = (-k["a21"] * s12 + k["a11"] * s22) / k["det_a"]
    return mean_alpha, mean_beta, c11, c12, c22
