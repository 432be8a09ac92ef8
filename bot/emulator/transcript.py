"""A readable rendering of what happened in the emulated chats."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bot.emulator.markup import ParseError, html_to_text, parse_entities

__all__ = ["buttons_of", "render_transcript"]


def buttons_of(reply_markup: Mapping[str, Any] | None) -> list[list[str]]:
    """Button labels of an inline keyboard, row by row."""
    if not reply_markup:
        return []
    rows = reply_markup.get("inline_keyboard") or reply_markup.get("keyboard") or []
    labels: list[list[str]] = []
    for row in rows:
        labels.append([str(button.get("text", "")) for button in row if isinstance(button, dict)])
    return labels


def _plain(event: Mapping[str, Any]) -> str:
    if "text" in event and event["text"] is not None:
        return str(event["text"])
    raw = str(event.get("raw_text") or "")
    mode = event.get("parse_mode")
    if mode:
        try:
            return parse_entities(raw, str(mode))[0]
        except (ParseError, LookupError):
            return html_to_text(raw)
    return raw


def _buttons_line(event: Mapping[str, Any], indent: str) -> list[str]:
    rows = buttons_of(event.get("reply_markup"))
    return [indent + " ".join(f"[{label}]" for label in row) for row in rows if row]


def render_transcript(events: Iterable[Mapping[str, Any]]) -> str:
    """Render events (``Emulator.transcript()``) as chat lines."""
    lines: list[str] = []
    for event in events:
        kind = event.get("kind")
        where = f"[{event.get('chat_title') or event.get('chat_id')}]"
        who = event.get("user_name") or "someone"
        text = _plain(event)
        if kind == "user_message":
            body = f"[photo] {text}".rstrip() if event.get("photo") else text
            lines.append(f"{where} {who}: {body}")
        elif kind == "bot_message":
            body = f"[photo] {text}".rstrip() if event.get("photo") else text
            if event.get("document"):
                body = f"[{event['document']}] {text}".rstrip()
            if event.get("poll"):
                options = " / ".join(event["poll"].get("options", []))
                body = f"[poll] {text} ({options})"
            first, *rest = body.split("\n") or [""]
            lines.append(f"{where} 🤖 bot: {first}")
            lines.extend(f"    {line}" for line in rest)
            lines.extend(_buttons_line(event, "    "))
        elif kind == "edit":
            first, *rest = (text or "").split("\n") or [""]
            lines.append(f"   ↳ edited #{event.get('message_id')}: {first}")
            lines.extend(f"     {line}" for line in rest)
            lines.extend(_buttons_line(event, "     "))
        elif kind == "delete":
            lines.append(f"   ↳ deleted #{event.get('message_id')}")
        elif kind == "pin":
            lines.append(f"   ↳ pinned #{event.get('message_id')}")
        elif kind == "unpin":
            lines.append(f"   ↳ unpinned #{event.get('message_id')}")
        elif kind == "poll_stopped":
            lines.append(f"   ↳ poll #{event.get('message_id')} closed")
        elif kind == "click":
            label = event.get("button") or event.get("data")
            lines.append(f"{where} {who} taps [{label}]")
        elif kind == "callback_answer":
            if text:
                style = "alert" if event.get("show_alert") else "toast"
                lines.append(f"   ↳ {style} to {who}: {text}")
        elif kind == "join":
            lines.append(f"{where} → {who} joined")
        elif kind == "leave":
            lines.append(f"{where} ← {who} left")
        elif kind == "bot_added":
            lines.append(f"{where} → {who} added the bot")
        elif kind == "bot_status":
            lines.append(f"{where} * bot is now {event.get('status')}")
        elif kind == "bot_removed":
            lines.append(f"{where} ← {who} removed the bot")
        elif kind == "migrate":
            lines.append(f"{where} * group upgraded to supergroup {event.get('new_chat_id')}")
        elif kind == "fault":
            lines.append(f"   ! {event.get('method')}: {event.get('description')}")
    return "\n".join(lines)
