"""Experiment arithmetic: sticky bucketing of users into variants, and the winner statistics."""

import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

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


def summarize(
    experiment: Mapping[str, Any],
    exposures: Sequence[Mapping[str, Any]],
    converted_at: Mapping[str, datetime],
    now: datetime,
) -> dict[str, Any]:
    """Exposures, conversions, rates and probabilities per variant and for the holdout, and the
    variant auto-promotion would pick (`winner`, None when none qualifies).

    A user converted when the conversion event last occurred after their first exposure. The
    first variant is the control; a winner beats it at the confidence threshold with at least
    `min_exposures` on both sides.
    """
    tally: dict[str | None, list[int]] = {v["id"]: [0, 0] for v in experiment["variants"]}
    tally.setdefault(None, [0, 0])
    for exposure in exposures:
        counts = tally.setdefault(exposure.get("variant_id"), [0, 0])
        counts[0] += 1
        last = converted_at.get(exposure["user_id"])
        if last is not None and last > exposure["first_exposed_at"]:
            counts[1] += 1
    control = experiment["variants"][0]["id"]
    control_conv, control_exp = tally[control][1], tally[control][0]
    rows: list[dict[str, Any]] = []
    winner: dict[str, Any] | None = None
    for variant in experiment["variants"]:
        exposed, conversions = tally[variant["id"]]
        probability = None
        if variant["id"] != control:
            probability = round(
                probability_to_beat(control_conv, control_exp, conversions, exposed),
                6,
            )
            enough = min(exposed, control_exp) >= experiment["min_exposures"]
            if (
                enough
                and probability >= experiment["confidence_threshold"]
                and (winner is None or probability > winner["probability_to_beat_control"])
            ):
                winner = {
                    "variant_id": variant["id"],
                    "at": now,
                    "by": "auto_promote",
                    "probability_to_beat_control": probability,
                    "reason": (
                        f"variant {variant['id']} beat control {control} with probability "
                        f"{probability:.4f} >= confidence threshold "
                        f"{experiment['confidence_threshold']} ({METHOD}; "
                        f"{conversions}/{exposed} vs {control_conv}/{control_exp} "
                        f"conversions/exposures, at least {experiment['min_exposures']} "
                        "exposures each)"
                    ),
                }
        rows.append(
            {
                "variant_id": variant["id"],
                "paywall_id": variant["paywall_id"],
                "traffic_percentage": variant["traffic_percentage"],
                "is_control": variant["id"] == control,
                "exposures": exposed,
                "conversions": conversions,
                "rate": round(conversions / exposed, 6) if exposed else None,
                "probability_to_beat_control": probability,
            }
        )
    held_exp, held_conv = tally[None]
    return {
        "variants": rows,
        "holdout": {
            "percentage": experiment["holdout_percentage"],
            "exposures": held_exp,
            "conversions": held_conv,
            "rate": round(held_conv / held_exp, 6) if held_exp else None,
        },
        "winner": winner,
        "computed_at": now,
    }
