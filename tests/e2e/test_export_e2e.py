"""Operators' reports in the real bot process against the emulator: `/export members` typed
in the pond reaches the operator's private chat as a document (a real multipart upload,
checked against the Bot API spec) whose CSV equals what `pondbot export members` writes
from the same database; the group gets one short note. `/stats` answers with a PNG."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.emulator import Emulator
from tests.e2e.conftest import ALICE, BOB, OPERATOR, POND, ROOT, BotProcess

pytestmark = pytest.mark.e2e

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def has(text: str) -> Any:
    return lambda m: text in str(m.get("text") or m.get("caption") or "")


def pondbot(proc: BotProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=proc.env, cwd=ROOT, capture_output=True,
        text=True, timeout=120, check=False,
    )


async def test_export_members_reaches_the_operators_dm_as_pondbot_export_writes_it(
    emu: Emulator, bot_process: BotProcess, tmp_path: Path
) -> None:
    emu.send_message(POND, ALICE, "签到")
    emu.send_message(POND, BOB, "大家好")
    emu.send_message(POND, OPERATOR, "/give @alice 30 欢迎")
    await emu.wait_for_message(POND, has("30"), timeout=20)

    # Without a linked private chat: one note, no document.
    emu.send_message(POND, OPERATOR, "/export members")
    note = await emu.wait_for_message(POND, timeout=20)
    assert "/start" in note["text"]

    emu.send_message(OPERATOR, OPERATOR, "/start")
    await emu.wait_for_message(OPERATOR, timeout=20)
    emu.send_message(POND, OPERATOR, "/export members")
    dm = await emu.wait_for_message(OPERATOR, lambda m: "document" in m, timeout=30)
    sent_note = await emu.wait_for_message(POND, timeout=20)
    assert "私聊" in sent_note["text"]
    await bot_process.idle()
    assert dm["document"]["file_name"].startswith("members-")
    assert dm["document"]["file_name"].endswith(".csv")
    document = emu.document_bytes(dm)
    assert f"[{dm['document']['file_name']}]" in emu.render(OPERATOR)  # the chat as printed

    out = tmp_path / "members.csv"
    r = await asyncio.to_thread(pondbot, bot_process, "export", "members", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert document == out.read_bytes()
    lines = document.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("user_id,username,display_name,balance,lifetime_earned,streak,"
                               "tier,lifetime_spent")
    assert any(line.startswith(f"{ALICE},alice,") for line in lines)
    # In the group: the two notes and nothing else of the export.
    documents_in_pond = [e for e in emu.events
                         if e["kind"] == "bot_message" and e["chat_id"] == POND
                         and e.get("document")]
    assert documents_in_pond == []

    # A member is refused and gets nothing.
    emu.send_message(POND, ALICE, "/export members")
    refusal = await emu.wait_for_message(POND, timeout=20)
    assert refusal["text"] == "⛔ 只有本群管理员可以这样做。"
    await bot_process.idle()
    assert not any(e["kind"] == "bot_message" and e["chat_id"] == ALICE and e.get("document")
                   for e in emu.events)

    # /stats: a chart uploaded as a photo.
    emu.send_message(POND, OPERATOR, "/stats")
    chart = await emu.wait_for_message(POND, lambda m: "photo" in m, timeout=60)
    assert "近 7 天" in chart.get("caption", "")
    png = emu.files[chart["photo"][-1]["file_id"]][2]
    assert png.startswith(PNG_MAGIC)
