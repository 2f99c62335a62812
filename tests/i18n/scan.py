"""A small scanner of Jinja HTML templates: it finds the visible text (text nodes and the attributes people read or
hear) that is not wrapped in ``{{ _("...") }}`` or ``{% trans %}``, so a string cannot slip past the catalogue."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

READ_ATTRIBUTES = ("alt", "title", "placeholder", "aria-label", "data-confirm", "aria-roledescription")
LETTERS = re.compile(r"[A-Za-z]{2,}")


@dataclass(frozen=True)
class Token:
    kind: str  # "text", "expr", "stmt", "comment", "tag"
    start: int
    end: int
    src: str

    @property
    def body(self) -> str:
        return self.src[self.start:self.end]


def _jinja_end(src: str, i: int) -> int:
    closer = {"{#": "#}", "{%": "%}", "{{": "}}"}[src[i:i + 2]]
    j = src.find(closer, i + 2)
    return len(src) if j < 0 else j + 2


def tokens(src: str) -> Iterator[Token]:
    """Comments, statements, expressions, HTML tags (jinja inside a tag stays in the tag) and text."""
    i, n, text_start = 0, len(src), 0
    raw_until: str | None = None  # inside <script>/<style>: everything up to the closing tag is one "raw" token
    while i < n:
        if raw_until is not None:
            j = src.lower().find(raw_until, i)
            j = n if j < 0 else j
            if j > i:
                yield Token("raw", i, j, src)
            i = text_start = j
            raw_until = None
            continue
        two = src[i:i + 2]
        if two in ("{#", "{%", "{{") or (src[i] == "<" and i + 1 < n and (src[i + 1].isalpha() or src[i + 1] in "/!")):
            if text_start < i:
                yield Token("text", text_start, i, src)
            if two in ("{#", "{%", "{{"):
                end = _jinja_end(src, i)
                kind = {"{#": "comment", "{%": "stmt", "{{": "expr"}[two]
            else:
                end, quote = i + 1, None
                while end < n:
                    c = src[end]
                    if quote:
                        if c == quote:
                            quote = None
                        end += 1
                    elif src[end:end + 2] in ("{#", "{%", "{{"):
                        end = _jinja_end(src, end)
                    elif c in "\"'":
                        quote = c
                        end += 1
                    elif c == ">":
                        end += 1
                        break
                    else:
                        end += 1
                kind = "tag"
                name = re.match(r"<\s*([a-zA-Z0-9]+)", src[i:end])
                if name and name.group(1).lower() in ("script", "style"):
                    raw_until = f"</{name.group(1).lower()}"
            yield Token(kind, i, end, src)
            i = text_start = end
        else:
            i += 1
    if text_start < n:
        yield Token("text", text_start, n, src)


def line_of(src: str, pos: int) -> int:
    return src.count("\n", 0, pos) + 1


ATTR = re.compile(r"""\s([a-zA-Z-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def untranslated(src: str, allow: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, text) of every visible English text not sent through the catalogue."""
    found: list[tuple[int, str]] = []
    in_trans = 0
    for tok in tokens(src):
        if tok.kind == "stmt":
            word = tok.body[2:].strip("-+ \n").split(" ", 1)[0].split("%")[0]
            if word == "trans" or word == "pluralize" and in_trans:
                in_trans = 1
            elif word == "endtrans":
                in_trans = 0
        elif tok.kind == "text" and not in_trans:
            text = " ".join(tok.body.split())
            if LETTERS.search(text) and text not in allow:
                found.append((line_of(src, tok.start), text))
        elif tok.kind == "tag":
            for m in ATTR.finditer(tok.body):
                name, value = m.group(1).lower(), m.group(2) if m.group(2) is not None else m.group(3)
                # An <input type=submit>'s value is its label; a <button>'s value is form data and never shown.
                shown_value = name == "value" and re.match(r"<\s*input\b", tok.body, re.I) and \
                    re.search(r'type=["\'](submit|button)', tok.body)
                if name in READ_ATTRIBUTES or shown_value:
                    plain = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", "", value)
                    if LETTERS.search(plain) and value.strip() not in allow:
                        found.append((line_of(src, tok.start), f'{name}="{value}"'))
    return found
