"""The fake's SOQL: a real tokenizer and parser for the subset a contact lookup needs, and its evaluation.

Supported::

    SELECT field [, field]* FROM sobject
        [WHERE condition]
        [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST] [, …]]
        [LIMIT n]

    condition  := term ((AND term)* | (OR term)*)       -- mixing AND and OR needs parentheses, as in SOQL
    term       := NOT term | ( condition ) | field op value | field [NOT] IN ( value [, value]* )
    op         := = | != | <> | < | <= | > | >=
    value      := 'string' | number | NULL | TRUE | FALSE

Keywords are case-insensitive. String literals take SOQL's escapes (``\\n \\N \\r \\R \\t \\T \\b \\B \\f \\F
\\" \\' \\\\`` and ``\\uXXXX``); any other backslash sequence, an unterminated literal or anything outside this
grammar is a ``SoqlError`` with code MALFORMED_QUERY, pointing at the row and column as Salesforce does.
Text comparisons ignore case, as SOQL's do for text fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Comparison",
    "Condition",
    "InList",
    "Junction",
    "Negation",
    "OrderItem",
    "Query",
    "SoqlError",
    "Token",
    "matches",
    "parse",
    "sort_rows",
    "tokenize",
]

_ESCAPES = {
    "n": "\n",
    "N": "\n",
    "r": "\r",
    "R": "\r",
    "t": "\t",
    "T": "\t",
    "b": "\b",
    "B": "\b",
    "f": "\f",
    "F": "\f",
    '"': '"',
    "'": "'",
    "\\": "\\",
}
_KEYWORDS = frozenset(
    {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "ORDER", "BY", "ASC", "DESC", "NULLS", "FIRST", "LAST"}
    | {"LIMIT", "NULL", "TRUE", "FALSE"}
)
_OPERATORS = ("!=", "<>", "<=", ">=", "=", "<", ">")


class SoqlError(Exception):
    """A query Salesforce would refuse: ``code`` is its errorCode (MALFORMED_QUERY, INVALID_FIELD, INVALID_TYPE)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Token:
    kind: str  # ident, keyword, string, number, op, comma, lparen, rparen, eof
    value: Any
    position: int


@dataclass(frozen=True)
class Comparison:
    field: str
    operator: str
    value: Any


@dataclass(frozen=True)
class InList:
    field: str
    values: tuple[Any, ...]
    negated: bool = False


@dataclass(frozen=True)
class Junction:
    connective: str  # AND | OR
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Negation:
    part: Condition


Condition = Comparison | InList | Junction | Negation


@dataclass(frozen=True)
class OrderItem:
    field: str
    ascending: bool = True
    nulls_first: bool = True


@dataclass(frozen=True)
class Query:
    fields: tuple[str, ...]
    sobject: str
    where: Condition | None = None
    order_by: tuple[OrderItem, ...] = ()
    limit: int | None = None

    def resolve(self, canonical: Callable[[str], str | None]) -> Query:
        """The query with every field name replaced by ``canonical(name)``; INVALID_FIELD for unknown ones."""

        def name(field: str) -> str:
            resolved = canonical(field)
            if resolved is None:
                raise SoqlError(
                    "INVALID_FIELD",
                    f"No such column '{field}' on entity '{self.sobject}'. If you are attempting to use a custom "
                    "field, be sure to append the '__c' after the custom field name. Please reference your WSDL "
                    "or the describe call for the appropriate names.",
                )
            return resolved

        def condition(node: Condition) -> Condition:
            if isinstance(node, Comparison):
                return Comparison(name(node.field), node.operator, node.value)
            if isinstance(node, InList):
                return InList(name(node.field), node.values, node.negated)
            if isinstance(node, Junction):
                return Junction(node.connective, tuple(condition(part) for part in node.parts))
            return Negation(condition(node.part))

        return Query(
            fields=tuple(name(field) for field in self.fields),
            sobject=self.sobject,
            where=condition(self.where) if self.where is not None else None,
            order_by=tuple(OrderItem(name(item.field), item.ascending, item.nulls_first) for item in self.order_by),
            limit=self.limit,
        )


# -- tokenizer -----------------------------------------------------------------------------------


def _malformed(query: str, position: int, reason: str) -> SoqlError:
    """Salesforce's MALFORMED_QUERY message: the query, a caret under the fault, row and column, the reason."""
    line_start = query.rfind("\n", 0, position) + 1
    line_end = query.find("\n", position)
    line = query[line_start : line_end if line_end != -1 else len(query)]
    row = query.count("\n", 0, position) + 1
    column = position - line_start + 1
    return SoqlError(
        "MALFORMED_QUERY", f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{reason}"
    )


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    index = 0
    length = len(query)
    while index < length:
        char = query[index]
        if char.isspace():
            index += 1
        elif char == "'":
            start = index
            value, index = _string_literal(query, start)
            tokens.append(Token("string", value, start))
        elif char.isalpha() or char == "_":
            start = index
            while index < length and (query[index].isalnum() or query[index] in "_."):
                index += 1
            word = query[start:index]
            if word.upper() in _KEYWORDS:
                tokens.append(Token("keyword", word.upper(), start))
            else:
                tokens.append(Token("ident", word, start))
        elif char.isdigit() or (char == "-" and index + 1 < length and query[index + 1].isdigit()):
            start = index
            index += 1
            while index < length and (query[index].isdigit() or query[index] == "."):
                index += 1
            text = query[start:index]
            try:
                number: int | float = float(text) if "." in text else int(text)
            except ValueError:
                raise _malformed(query, start, f"unexpected token: '{text}'") from None
            tokens.append(Token("number", number, start))
        elif char == ",":
            tokens.append(Token("comma", ",", index))
            index += 1
        elif char == "(":
            tokens.append(Token("lparen", "(", index))
            index += 1
        elif char == ")":
            tokens.append(Token("rparen", ")", index))
            index += 1
        else:
            operator = next((op for op in _OPERATORS if query.startswith(op, index)), None)
            if operator is None:
                raise _malformed(query, index, f"unexpected token: '{char}'")
            tokens.append(Token("op", "!=" if operator == "<>" else operator, index))
            index += len(operator)
    tokens.append(Token("eof", None, length))
    return tokens


def _string_literal(query: str, start: int) -> tuple[str, int]:
    """The value of the literal opening at ``start`` and the index after its closing quote."""
    parts: list[str] = []
    index = start + 1
    while index < len(query):
        char = query[index]
        if char == "'":
            return "".join(parts), index + 1
        if char == "\\":
            if index + 1 >= len(query):
                break
            escape = query[index + 1]
            if escape == "u":
                digits = query[index + 2 : index + 6]
                if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                    raise _malformed(
                        query,
                        start,
                        f"Invalid string literal '{query[start + 1 : index + 6]}'. Illegal unicode escape.",
                    )
                parts.append(chr(int(digits, 16)))
                index += 6
                continue
            if escape not in _ESCAPES:
                literal_end = query.find("'", index + 2)
                literal = query[start + 1 : literal_end if literal_end != -1 else len(query)]
                raise _malformed(
                    query,
                    start,
                    f"Invalid string literal '{literal}'. Illegal character sequence '\\{escape}' in string literal.",
                )
            parts.append(_ESCAPES[escape])
            index += 2
            continue
        parts.append(char)
        index += 1
    raise _malformed(query, start, f"line 1:{len(query)} mismatched character '<EOF>' expecting \"'\"")


# -- parser ---------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.index = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def unexpected(self) -> SoqlError:
        token = self.current
        shown = "<EOF>" if token.kind == "eof" else self.query[token.position :].split()[0][:40]
        return _malformed(self.query, token.position, f"unexpected token: '{shown}'")

    def keyword(self, *words: str) -> str | None:
        if self.current.kind == "keyword" and self.current.value in words:
            return str(self.advance().value)
        return None

    def expect_keyword(self, word: str) -> None:
        if self.keyword(word) is None:
            raise self.unexpected()

    def expect(self, kind: str) -> Token:
        if self.current.kind != kind:
            raise self.unexpected()
        return self.advance()

    def identifier(self) -> str:
        return str(self.expect("ident").value)

    def parse(self) -> Query:
        self.expect_keyword("SELECT")
        fields = [self.identifier()]
        while self.current.kind == "comma":
            self.advance()
            fields.append(self.identifier())
        self.expect_keyword("FROM")
        sobject = self.identifier()
        where = None
        if self.keyword("WHERE"):
            where = self.condition()
        order_by: list[OrderItem] = []
        if self.keyword("ORDER"):
            self.expect_keyword("BY")
            order_by.append(self.order_item())
            while self.current.kind == "comma":
                self.advance()
                order_by.append(self.order_item())
        limit = None
        if self.keyword("LIMIT"):
            token = self.expect("number")
            if not isinstance(token.value, int) or token.value < 0:
                raise _malformed(self.query, token.position, "LIMIT must be a non-negative integer")
            limit = token.value
        if self.current.kind != "eof":
            raise self.unexpected()
        return Query(tuple(fields), sobject, where, tuple(order_by), limit)

    def order_item(self) -> OrderItem:
        field = self.identifier()
        direction = self.keyword("ASC", "DESC")
        ascending = direction != "DESC"
        nulls_first = ascending
        if self.keyword("NULLS"):
            placement = self.keyword("FIRST", "LAST")
            if placement is None:
                raise self.unexpected()
            nulls_first = placement == "FIRST"
        return OrderItem(field, ascending, nulls_first)

    def condition(self) -> Condition:
        parts = [self.term()]
        connective: str | None = None
        while self.current.kind == "keyword" and self.current.value in ("AND", "OR"):
            if connective is not None and self.current.value != connective:
                raise self.unexpected()  # SOQL wants parentheses when AND and OR meet
            connective = str(self.advance().value)
            parts.append(self.term())
        return Junction(connective, tuple(parts)) if connective else parts[0]

    def term(self) -> Condition:
        if self.keyword("NOT"):
            return Negation(self.term())
        if self.current.kind == "lparen":
            self.advance()
            inner = self.condition()
            self.expect("rparen")
            return inner
        field = self.identifier()
        if self.keyword("NOT"):
            self.expect_keyword("IN")
            return InList(field, self.value_list(), negated=True)
        if self.keyword("IN"):
            return InList(field, self.value_list())
        operator = str(self.expect("op").value)
        return Comparison(field, operator, self.value())

    def value_list(self) -> tuple[Any, ...]:
        self.expect("lparen")
        values = [self.value()]
        while self.current.kind == "comma":
            self.advance()
            values.append(self.value())
        self.expect("rparen")
        return tuple(values)

    def value(self) -> Any:
        token = self.current
        if token.kind in ("string", "number"):
            return self.advance().value
        literal = self.keyword("NULL", "TRUE", "FALSE")
        if literal is not None:
            return {"NULL": None, "TRUE": True, "FALSE": False}[literal]
        raise self.unexpected()


def parse(query: str) -> Query:
    """The parsed query, or SoqlError(MALFORMED_QUERY) saying where and why it is not SOQL we understand."""
    return _Parser(query).parse()


# -- evaluation -----------------------------------------------------------------------------------


def _comparable(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _compare(actual: Any, operator: str, expected: Any) -> bool:
    left, right = _comparable(actual), _comparable(expected)
    if operator == "=":
        return bool(left == right)
    if operator == "!=":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        if operator == "<":
            return bool(left < right)
        if operator == "<=":
            return bool(left <= right)
        if operator == ">":
            return bool(left > right)
        return bool(left >= right)
    except TypeError:
        return False


def matches(condition: Condition | None, row: Mapping[str, Any]) -> bool:
    """Whether ``row`` (canonical field names) satisfies ``condition``."""
    if condition is None:
        return True
    if isinstance(condition, Comparison):
        return _compare(row.get(condition.field), condition.operator, condition.value)
    if isinstance(condition, InList):
        value = _comparable(row.get(condition.field))
        found = any(value == _comparable(candidate) for candidate in condition.values)
        return found != condition.negated
    if isinstance(condition, Junction):
        results = (matches(part, row) for part in condition.parts)
        return all(results) if condition.connective == "AND" else any(results)
    return not matches(condition.part, row)


def sort_rows(rows: Sequence[Mapping[str, Any]], order_by: Sequence[OrderItem]) -> list[Mapping[str, Any]]:
    """Rows in ``ORDER BY`` order (text case-insensitively; nulls first on ASC, last on DESC by default)."""
    ordered = list(rows)
    for item in reversed(order_by):
        present = [row for row in ordered if row.get(item.field) is not None]
        absent = [row for row in ordered if row.get(item.field) is None]
        present.sort(key=lambda row: _comparable(row.get(item.field)), reverse=not item.ascending)
        ordered = absent + present if item.nulls_first else present + absent
    return ordered
