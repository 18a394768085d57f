"""Dataset rows fold into `traits.dataset.<name>.<field>` without clobbering other fields."""

from datetime import UTC, datetime, timedelta

from audience_evaluator.profiles import fold, new_profile
from audience_shared.events import TraitsIdentified
from audience_shared.rules import Group, TraitCondition, evaluate_naive

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


def row(dataset: str, fields: dict[str, object], at: datetime = NOW) -> TraitsIdentified:
    return TraitsIdentified(
        project_id="p", user_id="u", timestamp=at, traits={"dataset": {dataset: fields}}
    )


def test_fold__two_datasets__both_kept() -> None:
    profile = new_profile("p", "u")
    fold(profile, TraitsIdentified(project_id="p", user_id="u", traits={"plan": "pro"}), [], NOW)
    fold(profile, row("scores", {"ltv": 120, "tier": "gold"}), [], NOW)
    changed = fold(profile, row("crm", {"segment": "smb"}), [], NOW)

    assert changed >= {"trait:dataset"}
    assert profile["traits"] == {
        "plan": "pro",
        "dataset": {"scores": {"ltv": 120, "tier": "gold"}, "crm": {"segment": "smb"}},
    }


def test_fold__row_naming_some_fields__keeps_the_others_and_is_read_by_rules() -> None:
    profile = new_profile("p", "u")
    fold(profile, row("scores", {"ltv": 120, "tier": "gold"}), [], NOW)
    fold(profile, row("scores", {"ltv": 300, "seen_at": "2025-02-01"}), [], NOW)

    assert profile["traits"]["dataset"]["scores"] == {
        "ltv": 300,
        "tier": "gold",
        "seen_at": datetime(2025, 2, 1, tzinfo=UTC),
    }
    rule = Group(rules=[TraitCondition(field="dataset.scores.ltv", operator="gt", value=200)])
    assert evaluate_naive(rule, profile, NOW)


def test_fold__older_row__loses_to_the_newer_value() -> None:
    profile = new_profile("p", "u")
    fold(profile, row("scores", {"ltv": 300}), [], NOW)
    changed = fold(profile, row("scores", {"ltv": 5}, NOW - timedelta(hours=1)), [], NOW)

    assert "trait:dataset" not in changed
    assert profile["traits"]["dataset"]["scores"]["ltv"] == 300
