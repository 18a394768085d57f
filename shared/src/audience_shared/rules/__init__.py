"""The audience rule language: one canonical rule, four input forms, two executors that agree."""

from audience_shared.rules.counters import CounterSpec
from audience_shared.rules.criteria import parse_criteria
from audience_shared.rules.errors import RuleError
from audience_shared.rules.inputs import rule_from_filter, rule_from_filters, rule_from_properties
from audience_shared.rules.limits import MAX_CONDITIONS, MAX_DEPTH, validate_rule
from audience_shared.rules.model import (
    RULE_VERSION,
    AbsoluteWindow,
    AudienceCondition,
    CountClause,
    CountOperator,
    EventCondition,
    Group,
    IntentCondition,
    RelativeWindow,
    TraitCondition,
    TraitOperator,
)
from audience_shared.rules.naive import evaluate_naive, explain
from audience_shared.rules.predicate import CompiledRule, Evaluation, compile_predicate
from audience_shared.rules.references import (
    References,
    find_audience_cycle,
    references,
    resolve_audience_names,
)
from audience_shared.rules.render import render_criteria

__all__ = [
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "RULE_VERSION",
    "AbsoluteWindow",
    "AudienceCondition",
    "CompiledRule",
    "CountClause",
    "CountOperator",
    "CounterSpec",
    "Evaluation",
    "EventCondition",
    "Group",
    "IntentCondition",
    "References",
    "RelativeWindow",
    "RuleError",
    "TraitCondition",
    "TraitOperator",
    "compile_predicate",
    "evaluate_naive",
    "explain",
    "find_audience_cycle",
    "parse_criteria",
    "references",
    "render_criteria",
    "resolve_audience_names",
    "rule_from_filter",
    "rule_from_filters",
    "rule_from_properties",
    "validate_rule",
]
