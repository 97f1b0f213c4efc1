"""Log-likelihoods of the Gaussian log-log demand model written on group statistics.

The functions take an array namespace ``xp`` (``numpy`` or ``pytensor.tensor``) so that
the very same formulas are evaluated inside a PyMC model and tested in NumPy against the
row-by-row likelihood and against SciPy's multivariate normal.

Notation for one group (a region or a store) with rows ``(x_i, y_i)``, ``x = log price``
and ``y = log quantity``: ``n`` rows, means ``mx, my`` and centred sums of squares and
cross-products ``cxx, cxy, cyy`` (see :class:`~elasticity_lib.data.prepare.GroupStats`).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "residual_sum_of_squares",
    "normal_group_loglik",
    "marginal_group_loglik",
    "conditional_effects",
    "group_information",
    "outer_marginal_correction",
    "outer_conditional",
]

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
    """Log p(y_group | m, S, sigma) with the group's intercept and slope integrated out.

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


# --- two nested levels: stores within regions -------------------------------------------
#
# With store effects theta_s ~ Normal(theta_r, T) around their region's effect and region
# effects theta_r ~ Normal(m_r, S), both levels can be integrated out. Seen as a function
# of its region's effect, the marginal likelihood of one store's rows (store effect
# integrated out) is exactly Gaussian:
#
#     log p(y_s | theta_r) = log p(y_s | m_r) + h_s'd - d'J_s d / 2,   d = theta_r - m_r,
#
# with J_s = X_s' V_s^-1 X_s and h_s = X_s' V_s^-1 (y_s - X_s m_r), V_s = sigma^2 I + X_s T X_s'.
# Summing J_s and h_s over a region's stores and integrating d ~ Normal(0, S) adds
#
#     -log det(I + S J) / 2 + h' (I + S J)^-1 S h / 2
#
# per region. Everything is 2x2 algebra on the store statistics.


def group_information(stats, m_alpha, m_beta, t11, t12, t22, sigma):
    """Each group's Gaussian information about its parent's effect, after integrating its own.

    For groups (stores) whose effects are ``Normal(parent effect, T)``, returns
    ``(j11, j12, j22, h1, h2)``: the precision ``J = X'V^-1 X`` and the score
    ``h = X'V^-1 (y - X m)`` at the parent mean ``m = (m_alpha, m_beta)``. With
    ``A = I + T G / sigma^2`` (``G = X'X``), ``J = G A^-1 / sigma^2`` and ``h = A'^-1 u / sigma^2``.
    """
    k = _shrinkage(stats, m_alpha, m_beta, t11, t12, t22, sigma)
    g11, g12, g22 = _gram(stats)
    scale = k["det_a"] * k["sig2"]
    j11 = (g11 * k["a22"] - g12 * k["a21"]) / scale
    j12 = (g12 * k["a11"] - g11 * k["a12"]) / scale
    j22 = (g22 * k["a11"] - g12 * k["a12"]) / scale
    h1 = (k["a22"] * k["u1"] - k["a21"] * k["u2"]) / scale
    h2 = (k["a11"] * k["u2"] - k["a12"] * k["u1"]) / scale
    return j11, j12, j22, h1, h2


def _outer(j11, j12, j22, h1, h2, s11, s12, s22):
    """B = I + S J, det B and q = B^-1 S h for summed information (J, h) and prior covariance S."""
    b11 = 1 + s11 * j11 + s12 * j12
    b12 = s11 * j12 + s12 * j22
    b21 = s12 * j11 + s22 * j12
    b22 = 1 + s12 * j12 + s22 * j22
    det_b = b11 * b22 - b12 * b21
    v1 = s11 * h1 + s12 * h2
    v2 = s12 * h1 + s22 * h2
    q1 = (b22 * v1 - b12 * v2) / det_b
    q2 = (-b21 * v1 + b11 * v2) / det_b
    return b11, b12, b21, b22, det_b, q1, q2


def outer_marginal_correction(xp, j11, j12, j22, h1, h2, s11, s12, s22):
    """What integrating a parent effect ~ Normal(m, S) adds to its children's log-likelihood.

    ``(j.., h..)`` are the children's information summed per parent (see
    :func:`group_information`); returns ``-log det(I + S J) / 2 + h'(I + S J)^-1 S h / 2``.
    """
    _, _, _, _, det_b, q1, q2 = _outer(j11, j12, j22, h1, h2, s11, s12, s22)
    return -0.5 * xp.log(det_b) + 0.5 * (h1 * q1 + h2 * q2)


def outer_conditional(m_alpha, m_beta, j11, j12, j22, h1, h2, s11, s12, s22):
    """Mean and covariance of a parent's (intercept, slope) given its children's data.

    The conditional posterior is Normal with covariance ``(I + S J)^-1 S`` and mean
    ``m + (I + S J)^-1 S h``. NumPy; returns ``(mean_alpha, mean_beta, c11, c12, c22)``.
    """
    b11, b12, b21, b22, det_b, q1, q2 = _outer(j11, j12, j22, h1, h2, s11, s12, s22)
    c11 = (b22 * s11 - b12 * s12) / det_b
    c12 = (b22 * s12 - b12 * s22) / det_b
    c22 = (-b21 * s12 + b11 * s22) / det_b
    return m_alpha + q1, m_beta + q2, c11, c12, c22
