"""Telegram message formatting: turn HTML / MarkdownV2 / Markdown text into plain
text plus MessageEntity dicts, failing the way the Bot API does on malformed input.

Offsets and lengths are in UTF-16 code units, as Telegram counts them.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ParseError", "html_to_text", "parse_entities", "utf16_len"]


class ParseError(ValueError):
    """The text cannot be parsed; the message follows "can't parse entities: "."""


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


_SIMPLE_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
}
_ATTR_TAGS = {"a", "span", "tg-emoji", "tg-time"}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ENTITY_RE = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]*);")
_TAG_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*")
_ATTR_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_-]*")


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.offset = 0  # UTF-16 units written so far

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.offset += utf16_len(text)

    def text(self) -> str:
        return "".join(self.parts)


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _decode_entity(text: str, i: int) -> tuple[str, int]:
    """Decode the HTML entity starting at text[i] == '&'; return (char, new index)."""
    match = _ENTITY_RE.match(text, i)
    if match is None:
        raise ParseError(
            f"Character '&' at byte offset {_byte_offset(text, i)} must be escaped as &amp;"
        )
    body = match.group(1)
    if body.startswith("#"):
        code = int(body[2:], 16) if body[1:2] in ("x", "X") else int(body[1:])
        if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise ParseError(f"Invalid character code in entity at byte offset "
                             f"{_byte_offset(text, i)}")
        return chr(code), match.end()
    if body not in _NAMED_ENTITIES:
        raise ParseError(
            f'Unsupported HTML entity "&{body};" at byte offset {_byte_offset(text, i)}'
        )
    return _NAMED_ENTITIES[body], match.end()


def _decode_attr(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "&":
            char, i = _decode_entity(value, i)
            out.append(char)
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _parse_attrs(text: str, i: int, tag: str, tag_start: int) -> tuple[dict[str, str], int]:
    attrs: dict[str, str] = {}
    n = len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            raise ParseError(
                f'Unclosed start tag "{tag}" at byte offset {_byte_offset(text, tag_start)}'
            )
        if text[i] == ">":
            return attrs, i + 1
        match = _ATTR_NAME_RE.match(text, i)
        if match is None:
            raise ParseError(
                f'Empty attribute name in the tag "{tag}" at byte offset '
                f"{_byte_offset(text, tag_start)}"
            )
        name = match.group(0).lower()
        i = match.end()
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i].isspace():
                i += 1
            if i >= n:
                break
            if text[i] in "\"'":
                quote = text[i]
                end = text.find(quote, i + 1)
                if end < 0:
                    break
                raw = text[i + 1 : end]
                i = end + 1
            else:
                start = i
                while i < n and not text[i].isspace() and text[i] != ">":
                    i += 1
                raw = text[start:i]
            attrs[name] = _decode_attr(raw)
        else:
            attrs[name] = ""
    raise ParseError(
        f'Unclosed start tag "{tag}" at byte offset {_byte_offset(text, tag_start)}'
    )


def _entity_for_tag(
    tag: str, attrs: dict[str, str], text: str, tag_start: int
) -> dict[str, Any] | None:
    if tag in _SIMPLE_TAGS:
        kind = _SIMPLE_TAGS[tag]
        if tag == "blockquote" and "expandable" in attrs:
            kind = "expandable_blockquote"
        entity: dict[str, Any] = {"type": kind}
        if tag == "code" and attrs.get("class", "").startswith("language-"):
            entity["language"] = attrs["class"][len("language-") :]
        return entity
    if tag == "a":
        href = attrs.get("href", "")
        match = re.fullmatch(r"tg://user\?id=(\d+)", href)
        if match:
            return {"type": "text_mention", "user": {"id": int(match.group(1))}}
        if not href:
            return None
        return {"type": "text_link", "url": href}
    if tag == "span":
        if attrs.get("class") != "tg-spoiler":
            raise ParseError(
                f'Tag "span" must have class "tg-spoiler" at byte offset '
                f"{_byte_offset(text, tag_start)}"
            )
        return {"type": "spoiler"}
    if tag == "tg-emoji":
        if "emoji-id" not in attrs:
            raise ParseError(
                f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset '
                f"{_byte_offset(text, tag_start)}"
            )
        return {"type": "custom_emoji", "custom_emoji_id": attrs["emoji-id"]}
    # tg-time
    if "unix" not in attrs or not attrs["unix"].isdigit():
        raise ParseError(
            f'Tag "tg-time" must have attribute "unix" at byte offset '
            f"{_byte_offset(text, tag_start)}"
        )
    entity = {"type": "date_time", "unix_time": int(attrs["unix"])}
    if "format" in attrs:
        entity["date_time_format"] = attrs["format"]
    return entity


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    out = _Builder()
    entities: list[dict[str, Any]] = []
    # stack items: (tag name, entity or None, start offset)
    stack: list[tuple[str, dict[str, Any] | None, int]] = []
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char == "&":
            decoded, i = _decode_entity(text, i)
            out.add(decoded)
            continue
        if char != "<":
            j = i
            while j < n and text[j] not in "<&":
                j += 1
            out.add(text[i:j])
            i = j
            continue
        tag_start = i
        if i + 1 < n and text[i + 1] == "/":
            end = text.find(">", i + 2)
            if end < 0:
                raise ParseError(f"Unclosed end tag at byte offset {_byte_offset(text, i)}")
            name = text[i + 2 : end].strip().lower()
            if not stack:
                raise ParseError(f"Unexpected end tag at byte offset {_byte_offset(text, i)}")
            open_tag, entity, start = stack.pop()
            if name != open_tag:
                raise ParseError(
                    f'Unmatched end tag at byte offset {_byte_offset(text, i)}, expected '
                    f'"</{open_tag}>", found "</{name}>"'
                )
            if entity is not None and out.offset > start:
                entity["offset"] = start
                entity["length"] = out.offset - start
                entities.append(entity)
            i = end + 1
            continue
        match = _TAG_NAME_RE.match(text, i + 1)
        if match is None:
            raise ParseError(
                f'Unsupported start tag "" at byte offset {_byte_offset(text, i)}'
            )
        tag = match.group(0).lower()
        if tag not in _SIMPLE_TAGS and tag not in _ATTR_TAGS:
            raise ParseError(
                f'Unsupported start tag "{tag}" at byte offset {_byte_offset(text, tag_start)}'
            )
        attrs, i = _parse_attrs(text, match.end(), tag, tag_start)
        entity = _entity_for_tag(tag, attrs, text, tag_start)
        if tag == "code" and stack and stack[-1][0] == "pre" and entity is not None:
            # <pre><code class="language-x"> is one pre entity with a language
            pre_entity = stack[-1][1]
            if pre_entity is not None and "language" in entity:
                pre_entity["language"] = entity["language"]
            entity = None
        stack.append((tag, entity, out.offset))
    if stack:
        raise ParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return out.text(), entities


_MD2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_MD2_NAMES = {
    "*": "bold",
    "_": "italic",
    "__": "underline",
    "~": "strikethrough",
    "||": "spoiler",
}
_ENTITY_TITLES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "text_link": "TextUrl",
    "code": "Code",
    "pre": "Pre",
}


def parse_markdown_v2(text: str) -> tuple[str, list[dict[str, Any]]]:
    out = _Builder()
    entities: list[dict[str, Any]] = []
    stack: list[tuple[str, int, int]] = []  # (marker, start offset, index in text)
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char == "\\" and i + 1 < n and 0 < ord(text[i + 1]) < 127:
            out.add(text[i + 1])
            i += 2
            continue
        if char == "`":
            fence = text.startswith("```", i)
            marker = "```" if fence else "`"
            j = i + len(marker)
            language = ""
            if fence:
                line_end = text.find("\n", j)
                if line_end >= 0 and re.fullmatch(r"[A-Za-z0-9_+#-]*", text[j:line_end]):
                    language = text[j:line_end]
                    j = line_end + 1
            body: list[str] = []
            while j < n and not text.startswith(marker, j):
                if text[j] == "\\" and j + 1 < n and text[j + 1] in "`\\":
                    body.append(text[j + 1])
                    j += 2
                else:
                    body.append(text[j])
                    j += 1
            if j >= n:
                kind = "Pre" if fence else "Code"
                raise ParseError(
                    f"Can't find end of {kind} entity at byte offset {_byte_offset(text, i)}"
                )
            start = out.offset
            out.add("".join(body))
            if out.offset > start:
                entity: dict[str, Any] = {
                    "type": "pre" if fence else "code",
                    "offset": start,
                    "length": out.offset - start,
                }
                if language:
                    entity["language"] = language
                entities.append(entity)
            i = j + len(marker)
            continue
        if char == "[":
            stack.append(("[", out.offset, i))
            i += 1
            continue
        if char == "]" and stack and stack[-1][0] == "[":
            _, start, _ = stack.pop()
            if i + 1 >= n or text[i + 1] != "(":
                raise ParseError(
                    f"Can't find end of TextUrl entity at byte offset {_byte_offset(text, i)}"
                )
            close = i + 2
            url: list[str] = []
            while close < n and text[close] != ")":
                if text[close] == "\\" and close + 1 < n:
                    url.append(text[close + 1])
                    close += 2
                else:
                    url.append(text[close])
                    close += 1
            if close >= n:
                raise ParseError(
                    f"Can't find end of a URL at byte offset {_byte_offset(text, i + 1)}"
                )
            if out.offset > start:
                entities.append(
                    {"type": "text_link", "offset": start, "length": out.offset - start,
                     "url": "".join(url)}
                )
            i = close + 1
            continue
        if char == ">" and (i == 0 or text[i - 1] == "\n"):
            i += 1
            continue
        marker = ""
        if text.startswith("__", i):
            marker = "__"
        elif text.startswith("||", i):
            marker = "||"
        elif char in "*_~":
            marker = char
        if marker:
            open_markers = [item[0] for item in stack]
            if marker in open_markers:
                top, start, _ = stack.pop()
                if top != marker:
                    raise ParseError(
                        f"Can't find end of {_ENTITY_TITLES.get(_MD2_NAMES.get(top, ''), 'the')}"
                        f" entity at byte offset {_byte_offset(text, i)}"
                    )
                if out.offset > start:
                    entities.append(
                        {"type": _MD2_NAMES[marker], "offset": start,
                         "length": out.offset - start}
                    )
            else:
                stack.append((marker, out.offset, i))
            i += len(marker)
            continue
        if char in _MD2_RESERVED:
            raise ParseError(
                f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        out.add(char)
        i += 1
    if stack:
        marker, _, index = stack[-1]
        kind = "TextUrl" if marker == "[" else _ENTITY_TITLES[_MD2_NAMES[marker]]
        raise ParseError(
            f"Can't find end of {kind} entity at byte offset {_byte_offset(text, index)}"
        )
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return out.text(), entities


def parse_markdown(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Legacy Markdown: *bold*, _italic_, `code`, ```pre```, [text](url); no nesting."""
    out = _Builder()
    entities: list[dict[str, Any]] = []
    i = 0
    n = len(text)
    kinds = {"*": "bold", "_": "italic", "`": "code", "```": "pre"}
    while i < n:
        char = text[i]
        if char == "\\" and i + 1 < n and text[i + 1] in "*_`[":
            out.add(text[i + 1])
            i += 2
            continue
        if char in "*_`":
            marker = "```" if text.startswith("```", i) else char
            end = text.find(marker, i + len(marker))
            if end < 0:
                raise ParseError(
                    f"Can't find end of the entity starting at byte offset "
                    f"{_byte_offset(text, i)}"
                )
            start = out.offset
            out.add(text[i + len(marker) : end])
            if out.offset > start:
                entities.append(
                    {"type": kinds[marker], "offset": start, "length": out.offset - start}
                )
            i = end + len(marker)
            continue
        if char == "[":
            match = re.compile(r"\[([^\]]*)\]\(([^)]*)\)").match(text, i)
            if match is None:
                raise ParseError(
                    f"Can't find end of the entity starting at byte offset "
                    f"{_byte_offset(text, i)}"
                )
            start = out.offset
            out.add(match.group(1))
            if out.offset > start:
                entities.append(
                    {"type": "text_link", "offset": start, "length": out.offset - start,
                     "url": match.group(2)}
                )
            i = match.end()
            continue
        out.add(char)
        i += 1
    return out.text(), entities


def parse_entities(text: str, parse_mode: str | None) -> tuple[str, list[dict[str, Any]]]:
    """Apply ``parse_mode``; raise :class:`ParseError` or ``LookupError`` (unknown mode)."""
    if not parse_mode:
        return text, []
    mode = parse_mode.lower()
    if mode == "html":
        return parse_html(text)
    if mode == "markdownv2":
        return parse_markdown_v2(text)
    if mode == "markdown":
        return parse_markdown(text)
    raise LookupError(parse_mode)


def html_to_text(text: str) -> str:
    """Best-effort plain text of an HTML-formatted message (for transcripts)."""
    try:
        return parse_html(text)[0]
    except ParseError:
        return re.sub(r"<[^>]*>", "", text)
