"""A small evaluator for the boolean conditions that guard production.

Two languages share the subset used here: the Common Expression Language of a Workload
Identity provider's `attribute_condition` (`assertion.ref == 'refs/heads/main' &&
assertion.event_name in ['push', 'schedule']`) and GitHub Actions' `if:` expressions
(`github.event_name != 'pull_request' && github.ref == 'refs/heads/main'`).

Supported: string literals in single quotes, `true`/`false`, list literals, dotted names
looked up in a mapping, `==`, `!=`, `in`, `!`, `&&`, `||`, parentheses and calls of
zero-argument status functions (`always()`, `success()`) given in the same mapping.
`&&` and `||` short-circuit and return an operand, as in GitHub Actions, so a name that
is never reached need not be known. Anything else is a `ConditionError`: a test that
meets a construct it cannot judge fails instead of guessing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||[!()\[\],])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_][A-Za-z0-9_\-]*)*))"
)


class ConditionError(ValueError):
    """The text is not in the supported subset, or names something the context lacks."""


@dataclass(frozen=True)
class Token:
    kind: str  # string, op, name, end
    text: str


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ConditionError(f"cannot read {text[position : position + 20]!r} in {text!r}")
        kind = match.lastgroup or ""
        tokens.append(Token(kind, match.group(kind)))
        position = match.end()
    tokens.append(Token("end", ""))
    return tokens


Node = Callable[[Mapping[str, object]], object]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self, text: str | None = None) -> Token:
        token = self.tokens[self.index]
        if text is not None and token.text != text:
            raise ConditionError(f"expected {text!r}, found {token.text!r} in {self.text!r}")
        self.index += 1
        return token

    def parse(self) -> Node:
        node = self.disjunction()
        if self.peek().kind != "end":
            raise ConditionError(f"unexpected {self.peek().text!r} in {self.text!r}")
        return node

    def disjunction(self) -> Node:
        node = self.conjunction()
        while self.peek().text == "||":
            self.take()
            left, right = node, self.conjunction()
            node = lambda ctx, left=left, right=right: left(ctx) or right(ctx)  # noqa: E731
        return node

    def conjunction(self) -> Node:
        node = self.negation()
        while self.peek().text == "&&":
            self.take()
            left, right = node, self.negation()
            node = lambda ctx, left=left, right=right: left(ctx) and right(ctx)  # noqa: E731
        return node

    def negation(self) -> Node:
        if self.peek().text == "!":
            self.take()
            operand = self.negation()
            return lambda ctx: not operand(ctx)
        return self.comparison()

    def comparison(self) -> Node:
        left = self.primary()
        operator = self.peek().text
        if operator not in ("==", "!=", "in"):
            return left
        self.take()
        right = self.primary()
        if operator == "==":
            return lambda ctx: left(ctx) == right(ctx)
        if operator == "!=":
            return lambda ctx: left(ctx) != right(ctx)

        def contains(ctx: Mapping[str, object]) -> bool:
            collection = right(ctx)
            if not isinstance(collection, list):
                raise ConditionError(f"`in` needs a list on its right in {self.text!r}")
            return left(ctx) in collection

        return contains

    def primary(self) -> Node:
        token = self.take()
        if token.kind == "string":
            value = token.text[1:-1].replace("''", "'")
            return lambda ctx: value
        if token.text == "(":
            node = self.disjunction()
            self.take(")")
            return node
        if token.text == "[":
            items: list[Node] = []
            while self.peek().text != "]":
                items.append(self.disjunction())
                if self.peek().text == ",":
                    self.take()
            self.take("]")
            return lambda ctx: [item(ctx) for item in items]
        if token.kind == "name":
            if token.text in ("true", "false"):
                constant = token.text == "true"
                return lambda ctx: constant
            if self.peek().text == "(":
                self.take("(")
                self.take(")")
                return self.lookup(token.text + "()")
            return self.lookup(token.text)
        raise ConditionError(f"unexpected {token.text!r} in {self.text!r}")

    def lookup(self, name: str) -> Node:
        def value(ctx: Mapping[str, object]) -> object:
            if name not in ctx:
                raise ConditionError(f"{name} is not in the context given for {self.text!r}")
            return ctx[name]

        return value


def strip_github_braces(text: str) -> str:
    """`${{ expr }}` -> `expr`; GitHub also accepts an `if:` without the braces."""
    text = text.strip()
    if text.startswith("${{") and text.endswith("}}"):
        return text[3:-2]
    return text


def evaluate(text: str, context: Mapping[str, object]) -> object:
    """The value of `text` with names looked up in `context` (GitHub's truthiness applies)."""
    return _Parser(strip_github_braces(text)).parse()(context)
