"""A streaming JSON tokenizer that behaves like Jackson 1.x's ``JsonParser``.

Floodlight v0.91 does not decode request bodies into objects: its resources walk the token
stream by hand (``nextToken``/``getCurrentName``/``getText``) and, for a nested object,
stop at the first ``END_OBJECT`` of any depth. Reproducing what Floodlight stores therefore
needs the same token stream, not Python's ``json`` module:

- tokens come one at a time and a syntax error surfaces only when the walk reaches it (what
  was read before it has already been used; trailing garbage after the root value is never
  read at all);
- after a field name, the value's first character is checked at once (literals and numbers
  are read eagerly, strings only when delivered), as in ``ReaderBasedParser.nextToken``;
- ``getText`` gives the field name for ``FIELD_NAME``, the literal text of numbers, and
  ``"null"``/``"true"``/``"{"``... for the other tokens;
- ``getCurrentName`` gives, for ``START_OBJECT``/``START_ARRAY``, the name in the parent
  context; inside an array it is None; after an ``END_*`` it is the parent's current name.
"""

from __future__ import annotations

import enum


class JsonParseError(Exception):
    """Jackson's ``JsonParseException`` (an ``IOException``)."""


class Token(enum.Enum):
    START_OBJECT = "{"
    END_OBJECT = "}"
    START_ARRAY = "["
    END_ARRAY = "]"
    FIELD_NAME = "FIELD_NAME"
    VALUE_STRING = "VALUE_STRING"
    VALUE_NUMBER_INT = "VALUE_NUMBER_INT"
    VALUE_NUMBER_FLOAT = "VALUE_NUMBER_FLOAT"
    VALUE_TRUE = "true"
    VALUE_FALSE = "false"
    VALUE_NULL = "null"


_WS = " \t\r\n"
_DIGITS = "0123456789"
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_LITERALS = {"t": ("true", Token.VALUE_TRUE), "f": ("false", Token.VALUE_FALSE), "n": ("null", Token.VALUE_NULL)}


class _Context:
    __slots__ = ("kind", "parent", "name", "index")

    def __init__(self, kind: str, parent: _Context | None) -> None:
        self.kind = kind  # "root", "object" or "array"
        self.parent = parent
        self.name: str | None = None
        self.index = -1

    def expect_comma(self) -> bool:
        self.index += 1
        return self.kind != "root" and self.index > 0

    def describe(self) -> str:
        return {"root": "ROOT", "object": "OBJECT", "array": "ARRAY"}[self.kind]


class StreamingParser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.ctx = _Context("root", None)
        self.token: Token | None = None
        self._text: str | None = None
        self._pending: tuple[Token, str | None] | None = None

    # -- the JsonParser API used by Floodlight -----------------------------------------------

    def next_token(self) -> Token | None:
        if self._pending is not None:
            tok, text = self._pending
            self._pending = None
            return self._deliver(tok, text)
        c = self._skip_ws()
        if c is None:
            if self.ctx.kind != "root":
                raise self._error(f"Unexpected end-of-input: expected close marker for {self.ctx.describe()}")
            return self._set(None, None)
        if c == "]" or c == "}":
            want = "array" if c == "]" else "object"
            if self.ctx.kind != want:
                raise self._error(f"Unexpected close marker '{c}': expected '{'}' if self.ctx.kind == 'object' else ']'}'")
            self.i += 1
            self.ctx = self.ctx.parent or self.ctx
            return self._set(Token.END_ARRAY if c == "]" else Token.END_OBJECT, c)
        if self.ctx.expect_comma():
            if c != ",":
                raise self._unexpected(c, f"was expecting comma to separate {self.ctx.describe()} entries")
            self.i += 1
            c = self._skip_ws_required()
        if self.ctx.kind == "object":
            if c != '"':
                raise self._unexpected(c, "was expecting double-quote to start field name")
            name = self._read_string()
            self.ctx.name = name
            if self._skip_ws_required() != ":":
                raise self._unexpected(self.s[self.i], "was expecting a colon to separate field name and value")
            self.i += 1
            self._pending = self._scan_value(self._skip_ws_required())
            return self._set(Token.FIELD_NAME, name)
        tok, text = self._scan_value(c)
        return self._deliver(tok, text)

    def get_text(self) -> str | None:
        return self._text

    def current_name(self) -> str | None:
        if self.token in (Token.START_OBJECT, Token.START_ARRAY):
            parent = self.ctx.parent
            return parent.name if parent is not None else None
        return self.ctx.name

    # -- internals -----------------------------------------------------------------------------

    def _set(self, tok: Token | None, text: str | None) -> Token | None:
        self.token = tok
        self._text = text
        return tok

    def _deliver(self, tok: Token, text: str | None) -> Token | None:
        if tok is Token.START_OBJECT:
            self.ctx = _Context("object", self.ctx)
        elif tok is Token.START_ARRAY:
            self.ctx = _Context("array", self.ctx)
        elif tok is Token.VALUE_STRING:
            text = self._read_string()
        return self._set(tok, text)

    def _scan_value(self, c: str) -> tuple[Token, str | None]:
        """Look at a value's first character (reading literals and numbers whole)."""
        if c == '"':
            return Token.VALUE_STRING, None  # read when delivered
        if c == "{" or c == "[":
            self.i += 1
            return (Token.START_OBJECT, "{") if c == "{" else (Token.START_ARRAY, "[")
        if c in _LITERALS:
            word, tok = _LITERALS[c]
            end = self.i + len(word)
            if self.s[self.i : end] != word or (end < len(self.s) and (self.s[end].isalnum() or self.s[end] in "_$")):
                raise self._error(f"Unrecognized token '{self._word()}': was expecting '{word}'")
            self.i = end
            return tok, word
        if c == "-" or c in _DIGITS:
            return self._read_number()
        if c == "]" or c == "}":
            raise self._unexpected(c, "expected a value")
        raise self._unexpected(c, "expected a valid value (number, String, array, object, 'true', 'false' or 'null')")

    def _read_number(self) -> tuple[Token, str]:
        s, start = self.s, self.i
        i = start
        if s[i] == "-":
            i += 1
            if i >= len(s) or s[i] not in _DIGITS:
                raise self._error("Missing integer part (next char after '-')")
        if s[i] == "0" and i + 1 < len(s) and s[i + 1] in _DIGITS:
            raise self._error("Invalid numeric value: Leading zeroes not allowed")
        while i < len(s) and s[i] in _DIGITS:
            i += 1
        tok = Token.VALUE_NUMBER_INT
        if i < len(s) and s[i] == ".":
            i += 1
            if i >= len(s) or s[i] not in _DIGITS:
                raise self._error("Unexpected character: Decimal point not followed by a digit")
            while i < len(s) and s[i] in _DIGITS:
                i += 1
            tok = Token.VALUE_NUMBER_FLOAT
        if i < len(s) and s[i] in "eE":
            i += 1
            if i < len(s) and s[i] in "+-":
                i += 1
            if i >= len(s) or s[i] not in _DIGITS:
                raise self._error("Unexpected character: Exponent indicator not followed by a digit")
            while i < len(s) and s[i] in _DIGITS:
                i += 1
            tok = Token.VALUE_NUMBER_FLOAT
        self.i = i
        return tok, s[start:i]

    def _read_string(self) -> str:
        s = self.s
        i = self.i + 1  # past the opening quote
        out: list[str] = []
        while True:
            if i >= len(s):
                raise self._error("Unexpected end-of-input: was expecting closing quote for a string value")
            c = s[i]
            if c == '"':
                self.i = i + 1
                return "".join(out)
            if c == "\\":
                if i + 1 >= len(s):
                    raise self._error("Unexpected end-of-input in character escape sequence")
                e = s[i + 1]
                if e == "u":
                    digits = s[i + 2 : i + 6]
                    if len(digits) < 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                        raise self._error("Unexpected character in character escape sequence: expected a hex-digit")
                    out.append(chr(int(digits, 16)))
                    i += 6
                    continue
                if e not in _ESCAPES:
                    raise self._error(f"Unrecognized character escape '{e}' (code {ord(e)})")
                out.append(_ESCAPES[e])
                i += 2
                continue
            if ord(c) < 32:
                raise self._error(f"Illegal unquoted character ((CTRL-CHAR, code {ord(c)})): has to be escaped using backslash")
            out.append(c)
            i += 1

    def _skip_ws(self) -> str | None:
        s, i = self.s, self.i
        while i < len(s) and s[i] in _WS:
            i += 1
        self.i = i
        return s[i] if i < len(s) else None

    def _skip_ws_required(self) -> str:
        c = self._skip_ws()
        if c is None:
            raise self._error(f"Unexpected end-of-input within/between {self.ctx.describe()} entries")
        return c

    def _word(self) -> str:
        j = self.i
        while j < len(self.s) and (self.s[j].isalnum() or self.s[j] in "_$"):
            j += 1
        return self.s[self.i : j] or self.s[self.i : self.i + 1]

    def _unexpected(self, c: str, why: str) -> JsonParseError:
        return self._error(f"Unexpected character ('{c}' (code {ord(c)})): {why}")

    def _error(self, message: str) -> JsonParseError:
        return JsonParseError(f"{message} at char {self.i}")
