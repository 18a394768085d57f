"""Experiment arithmetic: sticky bucketing of users into variants, and the winner statistics."""

import hashlib
import math
from collections.abc import Sequence

BUCKETS = 10_000
"""Traffic is split in hundredths of a percent."""

METHOD = "bayesian_beta_binomial"
METHOD_DESCRIPTION = (
    "P(variant rate > control rate) with independent Beta(1, 1) priors on each conversion rate, "
    "computed exactly (normal approximation past 20,000 conversions)"
)

_EXACT_LIMIT = 20_000


def bucket_of(experiment_id: str, user_id: str) -> int:
    """A user's bucket in 0..BUCKETS-1: a hash of experiment and user, so it is sticky for the
    user, independent across experiments, and the same in every gateway process."""
    digest = hashlib.sha256(f"{experiment_id}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(experiment_id: str, user_id: str, variants: Sequence[tuple[str, float]]) -> str | None:
    """The variant id a user falls in, or None for the holdout (the buckets no variant covers).

    `variants` are (id, traffic percentage) in their stored order; each takes the next run of
    buckets, so adding a variant at the end never moves a user already assigned.
    """
    bucket = bucket_of(experiment_id, user_id)
    upper = 0
    for variant_id, percentage in variants:
        upper += round(percentage * BUCKETS / 100)
        if bucket < upper:
            return variant_id
    return None


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def probability_to_beat(
    control_conversions: int,
    control_exposures: int,
    variant_conversions: int,
    variant_exposures: int,
) -> float:
    """P(p_variant > p_control) for Beta(1 + conversions, 1 + non-conversions) posteriors.

    The closed form sums over the variant's successes (Evan Miller, "Formulas for Bayesian A/B
    Testing"); past _EXACT_LIMIT of them a normal approximation of both posteriors is as good.
    """
    alpha_a = control_conversions + 1
    beta_a = control_exposures - control_conversions + 1
    alpha_b = variant_conversions + 1
    beta_b = variant_exposures - variant_conversions + 1
    if alpha_b > _EXACT_LIMIT:
        return _normal_probability(alpha_a, beta_a, alpha_b, beta_b)
    total = 0.0
    base = _log_beta(alpha_a, beta_a)
    for i in range(alpha_b):
        total += math.exp(
            _log_beta(alpha_a + i, beta_a + beta_b)
            - math.log(beta_b + i)
            - _log_beta(1 + i, beta_b)
            - base
        )
    return min(1.0, max(0.0, total))


def _normal_probability(alpha_a: float, beta_a: float, alpha_b: float, beta_b: float) -> float:
    def moments(alpha: float, beta: float) -> tuple[float, float]:
        n = alpha + beta
        return alpha / n, alpha * beta / (n * n * (n + 1))

    mean_a, var_a = moments(alpha_a, beta_a)
    mean_b, var_b = moments(alpha_b, beta_b)
    z = (mean_b - mean_a) / math.sqrt(var_a + var_b)
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))
