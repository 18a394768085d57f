"""The `criteria` language: a Lark LALR grammar for natural-language-like rules."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, TypeVar

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from pydantic import BaseModel, ValidationError

from audience_shared.profile import parse_iso_datetime
from audience_shared.rules.durations import duration_from_words
from audience_shared.rules.errors import RuleError
from audience_shared.rules.limits import validate_rule
from audience_shared.rules.model import (
    AbsoluteWindow,
    AudienceCondition,
    Condition,
    CountClause,
    CountOperator,
    EventCondition,
    Group,
    IntentCondition,
    RelativeWindow,
    TraitCondition,
    TraitOperator,
)

MAX_CRITERIA_LENGTH = 10_000

# Keywords are regexes with a word boundary and a higher priority than names, so `in` is a
# keyword but `insurance` and `in_stock` are names. Keep KEYWORDS in step: the renderer quotes
# any name or value that a keyword would capture.
GRAMMAR = r"""
start: USERS? expr?

expr: and_expr (OR and_expr)*
and_expr: not_expr (AND not_expr)*
not_expr: lead? NOT not_expr          -> negation
        | lead? LPAR expr RPAR        -> paren
        | lead? condition             -> bare

lead: WITH | FROM | WHO | WHOSE | THAT | HAVING | WHERE

?condition: trait_cond | event_cond | audience_cond | intent_cond | subscribed_cond

field: FIELD | QFIELD

trait_cond: field EQ value                     -> t_is
          | field IS value                     -> t_is
          | field NE value                     -> t_is_not
          | field IS NOT value                 -> t_is_not
          | field GT value                     -> t_gt
          | field GTE value                    -> t_gte
          | field LT value                     -> t_lt
          | field LTE value                    -> t_lte
          | field IN LPAR value_list RPAR      -> t_in
          | field NOT_IN LPAR value_list RPAR  -> t_not_in
          | field CONTAINS value               -> t_contains
          | field DOES NOT CONTAINS value      -> t_not_contains
          | field NOT CONTAINS value           -> t_not_contains
          | field STARTS WITH value            -> t_starts_with
          | field ENDS WITH value              -> t_ends_with
          | field BETWEEN value AND value      -> t_between
          | field BEFORE value                 -> t_before
          | field AFTER value                  -> t_after
          | field WITHIN duration              -> t_within_last
          | field NOT WITHIN duration          -> t_not_within_last
          | field EXISTS                       -> t_exists
          | field IS SET                       -> t_exists
          | field                              -> t_exists
          | field DOES NOT EXISTS              -> t_not_exists
          | field NOT EXISTS                   -> t_not_exists
          | field IS NOT SET                   -> t_not_exists

value: STRING | NUMBER | DATETIME | TRUE | FALSE | WORD
value_list: value (COMMA value)*
duration: THE? LAST? amount
amount: INT UNIT | DURATION

event_cond: verb event_ref where_clause? event_tail?
verb: PERFORMED                  -> performed
    | DID                        -> performed
    | DID NOT BASE?              -> not_performed
    | NEVER PERFORMED?           -> not_performed
event_ref: EVENT EQ name | name
name: NAME_WORD | STRING
where_clause: WHERE LPAR trait_cond (AND trait_cond)* RPAR
            | WHERE trait_cond
event_tail: count_clause window_clause?
          | window_clause count_clause?
count_clause: AT LEAST INT TIMES?         -> c_gte
            | MORE THAN INT TIMES?        -> c_gt
            | AT MOST INT TIMES?          -> c_lte
            | FEWER THAN INT TIMES?       -> c_lt
            | LESS THAN INT TIMES?        -> c_lt
            | EXACTLY INT TIMES?          -> c_eq
window_clause: IN THE? LAST amount        -> w_last
             | WITHIN THE? LAST? amount   -> w_last
             | BETWEEN DATETIME AND DATETIME -> w_between

audience_cond: IN AUDIENCE audience_ref       -> in_audience
             | NOT_IN AUDIENCE audience_ref   -> not_in_audience
audience_ref: name (ID name)?   -> by_name
            | ID name           -> by_id

intent_cond: INTENT topics intent_score? intent_window?
topics: name | IN LPAR name (COMMA name)* RPAR
intent_score: SCORE GTE NUMBER | SCORE AT LEAST NUMBER
intent_window: IN THE? LAST amount | WITHIN THE? LAST? amount

subscribed_cond: SUBSCRIBED TO value

USERS.2: /users\b/i
OR.2: /or\b/i
AND.2: /and\b/i
NOT_IN.3: /not\s+in\b/i
NOT.2: /not\b/i
WITH.2: /with\b/i
FROM.2: /from\b/i
WHO.2: /who\b/i
WHOSE.2: /whose\b/i
THAT.2: /that\b/i
HAVING.2: /having\b/i
WHERE.2: /where\b/i
IS.2: /is\b/i
IN.2: /in\b/i
CONTAINS.2: /contains?\b/i
DOES.2: /does\b/i
STARTS.2: /starts?\b/i
ENDS.2: /ends?\b/i
BETWEEN.2: /between\b/i
BEFORE.2: /before\b/i
AFTER.2: /after\b/i
WITHIN.2: /within\b/i
EXISTS.2: /exists?\b/i
SET.2: /set\b/i
THE.2: /the\b/i
LAST.2: /last\b/i
PERFORMED.2: /(?:performed|triggered|completed|made)\b/i
DID.2: /did\b/i
BASE.2: /(?:perform|trigger|complete|make|do)\b/i
NEVER.2: /never\b/i
EVENT.2: /event\b/i
AT.2: /at\b/i
LEAST.2: /least\b/i
MOST.2: /most\b/i
EXACTLY.2: /exactly\b/i
MORE.2: /more\b/i
FEWER.2: /fewer\b/i
LESS.2: /less\b/i
THAN.2: /than\b/i
TIMES.2: /times?\b/i
UNIT.2: /(?:minutes?|mins?|hours?|hrs?|days?|weeks?)\b/i
AUDIENCE.2: /audience\b/i
ID.2: /id\b/i
INTENT.2: /intent\b/i
SCORE.2: /score\b/i
SUBSCRIBED.2: /subscribed\b/i
TO.2: /to\b/i
TRUE.2: /true\b/i
FALSE.2: /false\b/i

EQ: /==?/
NE: "!="
GTE: ">="
LTE: "<="
GT: ">"
LT: "<"
LPAR: "("
RPAR: ")"
COMMA: ","

STRING: /"(?:[^"\\\x00-\x1f]|\\["\\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/ | /'(?:[^'\\]|\\.)*'/
_CLOCK: /[Tt]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?/
_ZONE: /[Zz]|[+-]\d{2}:?\d{2}/
DATETIME.4: /\d{4}-\d{2}-\d{2}/ (_CLOCK _ZONE?)? /(?![\w:.\-])/
DURATION.3: /\d+[mhdw](?!\w)/i
NUMBER.2: /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.])/
INT.2: /\d+(?![\w.])/
FIELD: /[^\W\d][\w\-]*(?:\.[\w\-]+)*/
QFIELD: /`[^`]+`/
NAME_WORD: /[^\W\d][\w\-.:\/]*/
WORD: /[^\W\d][\w\-.@+:\/]*/

%import common.WS
%ignore WS
"""

KEYWORDS: frozenset[str] = frozenset(
    {
        "users",
        "or",
        "and",
        "not",
        "with",
        "from",
        "who",
        "whose",
        "that",
        "having",
        "where",
        "is",
        "in",
        "contains",
        "contain",
        "does",
        "starts",
        "start",
        "ends",
        "end",
        "between",
        "before",
        "after",
        "within",
        "exists",
        "exist",
        "set",
        "the",
        "last",
        "performed",
        "triggered",
        "completed",
        "made",
        "did",
        "perform",
        "trigger",
        "complete",
        "make",
        "do",
        "never",
        "event",
        "at",
        "least",
        "most",
        "exactly",
        "more",
        "fewer",
        "less",
        "than",
        "times",
        "time",
        "minute",
        "minutes",
        "min",
        "mins",
        "hour",
        "hours",
        "hr",
        "hrs",
        "day",
        "days",
        "week",
        "weeks",
        "audience",
        "id",
        "intent",
        "score",
        "subscribed",
        "to",
        "true",
        "false",
    }
)

_READABLE = {
    "$END": "end of criteria",
    "LPAR": "(",
    "RPAR": ")",
    "COMMA": ",",
    "EQ": "=",
    "NE": "!=",
    "GT": ">",
    "GTE": ">=",
    "LT": "<",
    "LTE": "<=",
    "FIELD": "field name",
    "QFIELD": "`field name`",
    "STRING": "quoted string",
    "NUMBER": "number",
    "INT": "whole number",
    "DATETIME": "date (YYYY-MM-DD)",
    "DURATION": "duration (e.g. 7d)",
    "WORD": "value",
    "NAME_WORD": "name",
    "UNIT": "minutes|hours|days|weeks",
    "PERFORMED": "performed",
    "BASE": "perform",
    "NOT_IN": "not in",
    "CONTAINS": "contains",
    "EXISTS": "exists",
    "STARTS": "starts",
    "ENDS": "ends",
    "TIMES": "times",
}

SUBSCRIPTIONS_FIELD = "subscriptions"
"""`subscribed to X` means this list trait contains X."""


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(
        GRAMMAR,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=False,
    )


def parse_criteria(text: str) -> Group:
    """Parse a criteria string to the canonical rule; raises RuleError(code="invalid_criteria").

    The result also passes `validate_rule` (whose limit errors keep their own codes).
    """
    if not text.strip():
        raise RuleError("invalid_criteria", "criteria is empty", position=1, expected=["Users"])
    if len(text) > MAX_CRITERIA_LENGTH:
        raise RuleError(
            "invalid_criteria",
            f"criteria is longer than {MAX_CRITERIA_LENGTH} characters",
            position=MAX_CRITERIA_LENGTH + 1,
        )
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    try:
        rule = _Builder(text).start(tree)
    except RecursionError:
        raise RuleError("rule_too_deep", "criteria nests too deeply") from None
    validate_rule(rule)
    return rule


def _readable(names: set[str] | frozenset[str]) -> list[str]:
    shown = {_READABLE.get(name, name.lower()) for name in names if not name.startswith("__")}
    return sorted(shown)


def _syntax_error(text: str, exc: UnexpectedInput) -> RuleError:
    # LALR merges lookaheads across contexts; replaying the parser state gives the exact set.
    interactive = getattr(exc, "interactive_parser", None)
    accepted: set[str] = set(interactive.accepts()) if interactive is not None else set()
    if isinstance(exc, UnexpectedCharacters):
        return RuleError(
            "invalid_criteria",
            f"unexpected {exc.char!r} at column {exc.column}",
            position=exc.column,
            expected=_readable(accepted or exc.allowed),
        )
    if isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        return RuleError(
            "invalid_criteria",
            f"unexpected {str(exc.token)!r} at column {exc.column}",
            position=exc.column,
            expected=_readable(accepted or exc.expected),
        )
    if not accepted and isinstance(exc, UnexpectedToken | UnexpectedEOF):
        accepted = set(exc.expected)
    return RuleError(
        "invalid_criteria",
        "criteria ends too early",
        position=len(text.rstrip()) + 1,
        expected=_readable(accepted),
    )


def _tokens(tree: Tree[Token]) -> list[Token]:
    return [child for child in tree.children if isinstance(child, Token)]


def _subtrees(tree: Tree[Token], data: str | None = None) -> list[Tree[Token]]:
    return [
        child
        for child in tree.children
        if isinstance(child, Tree) and (data is None or child.data == data)
    ]


def _string_literal(token: Token) -> str:
    raw = str(token)
    if raw.startswith('"'):
        decoded = json.loads(raw)
        assert isinstance(decoded, str)
        return decoded
    return re.sub(r"\\(.)", r"\1", raw[1:-1], flags=re.DOTALL)


_COUNT_OPERATORS = {
    "c_gte": CountOperator.GTE,
    "c_gt": CountOperator.GT,
    "c_lte": CountOperator.LTE,
    "c_lt": CountOperator.LT,
    "c_eq": CountOperator.EQ,
}

_TRAIT_OPERATORS = {
    "t_is": TraitOperator.IS,
    "t_is_not": TraitOperator.IS_NOT,
    "t_gt": TraitOperator.GT,
    "t_gte": TraitOperator.GTE,
    "t_lt": TraitOperator.LT,
    "t_lte": TraitOperator.LTE,
    "t_in": TraitOperator.IN,
    "t_not_in": TraitOperator.NOT_IN,
    "t_contains": TraitOperator.CONTAINS,
    "t_not_contains": TraitOperator.NOT_CONTAINS,
    "t_starts_with": TraitOperator.STARTS_WITH,
    "t_ends_with": TraitOperator.ENDS_WITH,
    "t_between": TraitOperator.BETWEEN,
    "t_before": TraitOperator.BEFORE,
    "t_after": TraitOperator.AFTER,
    "t_within_last": TraitOperator.WITHIN_LAST,
    "t_not_within_last": TraitOperator.NOT_WITHIN_LAST,
    "t_exists": TraitOperator.EXISTS,
    "t_not_exists": TraitOperator.NOT_EXISTS,
}


_Built = TypeVar("_Built", bound=BaseModel)


class _Builder:
    """Turns the parse tree into model objects, reporting semantic errors at their column."""

    def __init__(self, text: str) -> None:
        self.text = text

    def error(self, node: Tree[Token] | Token, message: str) -> RuleError:
        column = node.column if isinstance(node, Token) else getattr(node.meta, "column", None)
        return RuleError("invalid_criteria", message, position=column)

    def build(self, node: Tree[Token], factory: type[_Built], **fields: Any) -> _Built:
        try:
            return factory(**fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            message = str(first["msg"]).removeprefix("Value error, ")
            raise self.error(node, message) from None

    def start(self, tree: Tree[Token]) -> Group:
        expressions = _subtrees(tree, "expr")
        if not expressions:
            return Group()
        node = self.node(expressions[0])
        return node if isinstance(node, Group) else Group(rules=[node])

    def node(self, tree: Tree[Token]) -> Group | Condition:
        if tree.data in ("expr", "and_expr"):
            items = [self.node(child) for child in _subtrees(tree)]
            if len(items) == 1:
                return items[0]
            return Group(match="any" if tree.data == "expr" else "all", rules=items)
        if tree.data == "negation":
            inner = self.node(_subtrees(tree)[-1])
            if isinstance(inner, Group) and not inner.negate:
                return Group(match=inner.match, negate=True, rules=inner.rules)
            return Group(negate=True, rules=[inner])
        if tree.data == "paren":
            inner = self.node(_subtrees(tree, "expr")[0])
            return inner if isinstance(inner, Group) else Group(rules=[inner])
        if tree.data == "bare":
            return self.condition(_subtrees(tree)[-1])
        raise self.error(tree, f"unexpected {tree.data}")

    def condition(self, tree: Tree[Token]) -> Condition:
        if tree.data in _TRAIT_OPERATORS:
            return self.trait(tree)
        if tree.data == "event_cond":
            return self.event(tree)
        if tree.data in ("in_audience", "not_in_audience"):
            return self.audience(tree)
        if tree.data == "intent_cond":
            return self.intent(tree)
        if tree.data == "subscribed_cond":
            value = self.value(_subtrees(tree, "value")[0])
            return self.build(
                tree,
                TraitCondition,
                field=SUBSCRIPTIONS_FIELD,
                operator=TraitOperator.CONTAINS,
                value=value,
            )
        raise self.error(tree, f"unexpected {tree.data}")

    def field(self, tree: Tree[Token]) -> str:
        token = _tokens(tree)[0]
        return str(token)[1:-1] if token.type == "QFIELD" else str(token)

    def value(self, tree: Tree[Token]) -> Any:
        token = _tokens(tree)[0]
        raw = str(token)
        if token.type == "STRING":
            return _string_literal(token)
        if token.type == "NUMBER":
            return float(raw) if any(mark in raw for mark in ".eE") else int(raw)
        if token.type == "DATETIME":
            moment = parse_iso_datetime(raw)
            if moment is None:
                raise self.error(token, f"{raw!r} is not a valid date")
            return moment
        if token.type == "TRUE":
            return True
        if token.type == "FALSE":
            return False
        return raw

    def name(self, tree: Tree[Token]) -> str:
        token = _tokens(tree)[0]
        return _string_literal(token) if token.type == "STRING" else str(token)

    def amount(self, tree: Tree[Token]) -> str:
        tokens = _tokens(tree)
        try:
            if tokens[0].type == "DURATION":
                raw = str(tokens[0])
                return duration_from_words(int(raw[:-1]), raw[-1])
            return duration_from_words(int(tokens[0]), str(tokens[1]))
        except ValueError as exc:
            raise self.error(tokens[0], str(exc)) from None

    def trait(self, tree: Tree[Token]) -> TraitCondition:
        operator = _TRAIT_OPERATORS[tree.data]
        field = self.field(_subtrees(tree, "field")[0])
        value: Any = None
        values = [self.value(child) for child in _subtrees(tree, "value")]
        lists = _subtrees(tree, "value_list")
        durations = _subtrees(tree, "duration")
        if lists:
            value = [self.value(child) for child in _subtrees(lists[0], "value")]
        elif durations:
            value = self.amount(_subtrees(durations[0], "amount")[0])
        elif operator == TraitOperator.BETWEEN:
            value = values
        elif values:
            value = values[0]
        return self.build(tree, TraitCondition, field=field, operator=operator, value=value)

    def event(self, tree: Tree[Token]) -> EventCondition:
        verb = _subtrees(tree)[0]
        name_tree = _subtrees(_subtrees(tree, "event_ref")[0], "name")[0]
        where = [
            self.trait(child)
            for clause in _subtrees(tree, "where_clause")
            for child in _subtrees(clause)
        ]
        count: CountClause | None = None
        window: RelativeWindow | AbsoluteWindow | None = None
        for tail in _subtrees(tree, "event_tail"):
            for clause in _subtrees(tail):
                if clause.data in _COUNT_OPERATORS:
                    count = self.build(
                        clause,
                        CountClause,
                        operator=_COUNT_OPERATORS[clause.data],
                        value=int(next(t for t in _tokens(clause) if t.type == "INT")),
                    )
                elif clause.data == "w_last":
                    window = RelativeWindow(last=self.amount(_subtrees(clause, "amount")[0]))
                else:
                    dates = [token for token in _tokens(clause) if token.type == "DATETIME"]
                    moments = [parse_iso_datetime(str(token)) for token in dates]
                    if moments[0] is None or moments[1] is None:
                        raise self.error(clause, "not a valid date")
                    window = self.build(clause, AbsoluteWindow, from_=moments[0], to=moments[1])
        return self.build(
            tree,
            EventCondition,
            event=self.name(name_tree),
            performed=verb.data == "performed",
            count=count,
            window=window,
            where=where,
        )

    def audience(self, tree: Tree[Token]) -> AudienceCondition:
        reference = next(child for child in _subtrees(tree) if child.data in ("by_name", "by_id"))
        names = [self.name(child) for child in _subtrees(reference, "name")]
        audience_name: str | None
        audience_id: str | None
        if reference.data == "by_id":
            audience_name, audience_id = None, names[0]
        else:
            audience_name = names[0]
            audience_id = names[1] if len(names) > 1 else None
        return self.build(
            tree,
            AudienceCondition,
            audience_id=audience_id,
            audience_name=audience_name,
            member=tree.data == "in_audience",
        )

    def intent(self, tree: Tree[Token]) -> IntentCondition:
        topics = [self.name(child) for child in _subtrees(_subtrees(tree, "topics")[0], "name")]
        fields: dict[str, Any] = {"topics": topics}
        for score in _subtrees(tree, "intent_score"):
            fields["min_score"] = float(str(_tokens(score)[-1]))
        for window in _subtrees(tree, "intent_window"):
            duration = self.amount(_subtrees(window, "amount")[0])
            if not duration.endswith("d"):
                raise self.error(window, "an intent lookback is a number of days (1-14)")
            fields["days"] = int(duration[:-1])
        return self.build(tree, IntentCondition, **fields)
