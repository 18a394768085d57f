"""Examples of the campaign and experiment routes' answers (`routes/campaigns.py`)."""

from typing import Any

from audience_api.routes.examples import CREATED_AT, PROJECT_ID, UPDATED_AT

CAMPAIGN_ID = "cmp_2a3b4c5d6e7f8a9b"
AUDIENCE_ID = "aud_3b4c5d6e7f8a9b0c"
EXPERIMENT_ID = "exp_4c5d6e7f8a9b0c1d"
CONTROL_ID = "var_5d6e7f8a9b0c1d2e"
VARIANT_ID = "var_6e7f8a9b0c1d2e3f"

CAMPAIGN: dict[str, Any] = {
    "id": CAMPAIGN_ID,
    "project_id": PROJECT_ID,
    "name": "Summer paywall",
    "status": "active",
    "audience_count": 1,
    "created_at": CREATED_AT,
    "updated_at": CREATED_AT,
}

CAMPAIGNS: dict[str, Any] = {"items": [CAMPAIGN]}

UPDATED_CAMPAIGN: dict[str, Any] = {**CAMPAIGN, "status": "paused", "updated_at": UPDATED_AT}

EXPERIMENT: dict[str, Any] = {
    "id": EXPERIMENT_ID,
    "campaign_id": CAMPAIGN_ID,
    "audience_id": AUDIENCE_ID,
    "status": "running",
    "holdout_percentage": 10.0,
    "confidence_threshold": 0.95,
    "auto_promote": False,
    "min_exposures": 100,
    "conversion_event": "purchase",
    "variants": [
        {"id": CONTROL_ID, "paywall_id": "paywall_classic", "traffic_percentage": 45.0},
        {"id": VARIANT_ID, "paywall_id": "paywall_trial_7d", "traffic_percentage": 45.0},
    ],
    "promotion": None,
    "created_at": CREATED_AT,
    "updated_at": CREATED_AT,
}

AUDIENCE: dict[str, Any] = {
    "id": AUDIENCE_ID,
    "campaign_id": CAMPAIGN_ID,
    "name": "US and Canada",
    "priority_order": 0,
    "entitlement_check": "premium",
    "frequency_cap": "3/day",
    "paywall_id": "paywall_classic",
    "filters": [
        {
            "id": "flt_7f8a9b0c1d2e3f4a",
            "field": "country",
            "operator": "in",
            "value": ["US", "CA"],
            "conjunction": "and",
            "audience_id": AUDIENCE_ID,
        }
    ],
    "experiment": EXPERIMENT,
    "created_at": CREATED_AT,
    "updated_at": CREATED_AT,
}

UPDATED_AUDIENCE: dict[str, Any] = {**AUDIENCE, "frequency_cap": "1/day", "updated_at": UPDATED_AT}

AUDIENCES: list[dict[str, Any]] = [
    AUDIENCE,
    {
        **AUDIENCE,
        "id": "aud_8a9b0c1d2e3f4a5b",
        "name": "Everyone else",
        "priority_order": 1,
        "entitlement_check": None,
        "frequency_cap": None,
        "filters": [],
        "experiment": None,
    },
]

REORDERED: list[dict[str, Any]] = [
    {**AUDIENCES[1], "priority_order": 0},
    {**AUDIENCES[0], "priority_order": 1},
]

RESOLUTION: dict[str, Any] = {
    "audience_id": AUDIENCE_ID,
    "experiment_id": EXPERIMENT_ID,
    "variant_id": VARIANT_ID,
    "paywall_id": "paywall_trial_7d",
    "holdout": False,
    "reason": "experiment_variant",
    "skipped": [],
}

PAUSED_EXPERIMENT: dict[str, Any] = {**EXPERIMENT, "status": "paused", "updated_at": UPDATED_AT}

PROMOTED_EXPERIMENT: dict[str, Any] = {
    **EXPERIMENT,
    "status": "promoted",
    "promotion": {
        "variant_id": VARIANT_ID,
        "at": UPDATED_AT,
        "by": "manual",
        "reason": "promoted through the API",
    },
    "updated_at": UPDATED_AT,
}

RESULTS: dict[str, Any] = {
    "experiment_id": EXPERIMENT_ID,
    "campaign_id": CAMPAIGN_ID,
    "audience_id": AUDIENCE_ID,
    "status": "running",
    "conversion_event": "purchase",
    "method": "bayesian_beta_binomial",
    "method_description": (
        "P(variant rate > control rate) with independent Beta(1, 1) priors on each conversion "
        "rate, computed exactly (normal approximation past 20,000 conversions)"
    ),
    "control_variant_id": CONTROL_ID,
    "confidence_threshold": 0.95,
    "auto_promote": False,
    "min_exposures": 100,
    "variants": [
        {
            "variant_id": CONTROL_ID,
            "paywall_id": "paywall_classic",
            "traffic_percentage": 45.0,
            "is_control": True,
            "exposures": 1210,
            "conversions": 61,
            "rate": 0.050413,
            "probability_to_beat_control": None,
        },
        {
            "variant_id": VARIANT_ID,
            "paywall_id": "paywall_trial_7d",
            "traffic_percentage": 45.0,
            "is_control": False,
            "exposures": 1187,
            "conversions": 83,
            "rate": 0.069924,
            "probability_to_beat_control": 0.979412,
        },
    ],
    "holdout": {"percentage": 10.0, "exposures": 268, "conversions": 11, "rate": 0.041045},
    "promotion": None,
    "computed_at": UPDATED_AT,
}
