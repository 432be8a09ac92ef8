"""Every request is checked against the Bot API spec; violations fail like Telegram."""

from __future__ import annotations

import html

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest, TelegramUnauthorizedError
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, InputPollOption

from bot.emulator import Emulator, EmulatorViolation
from bot.emulator.markup import ParseError, parse_html, parse_markdown_v2


async def raw_call(emu: Emulator, method: str, **params: str) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{emu.url}/bot{emu.token}/{method}", data=params) as resp,
    ):
        return resp.status, await resp.json()


def keyboard(data: str, text: str = "签到") -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=text, callback_data=data)]]
    )


async def test_missing_required_field_and_wrong_type(emu: Emulator, pond: int) -> None:
    status, body = await raw_call(emu, "sendMessage", chat_id=str(pond))
    assert status == 400
    assert body == {"ok": False, "error_code": 400, "description": "Bad Request: text is empty"}

    status, body = await raw_call(
        emu, "editMessageText", chat_id=str(pond), message_id="first", text="x"
    )
    assert status == 400
    assert "message_id must be of type Integer" in str(body["description"])

    status, body = await raw_call(emu, "sendMessage", chat_id=str(2**63), text="x")
    assert status == 400
    assert "64-bit" in str(body["description"])

    status, body = await raw_call(
        emu, "sendMessage", chat_id=str(pond), text="x", reply_markup='{"inline_keyboard": 5}'
    )
    assert status == 400
    assert [v["method"] for v in emu.violations] == ["sendMessage", "editMessageText",
                                                     "sendMessage", "sendMessage"]
    with pytest.raises(EmulatorViolation, match="text is empty"):
        emu.assert_no_violations()


async def test_unknown_parameter_is_a_warning_not_a_violation(emu: Emulator, pond: int) -> None:
    status, body = await raw_call(emu, "sendMessage", chat_id=str(pond), text="hi", shiny="1")
    assert status == 200 and body["ok"] is True
    assert any("shiny" in w for w in emu.warnings)
    emu.assert_no_violations()


async def test_unknown_method_and_token(emu: Emulator) -> None:
    status, body = await raw_call(emu, "sendTelepathy", chat_id="1")
    assert (status, body["description"]) == (404, "Not Found")
    session = AiohttpSession(api=TelegramAPIServer.from_base(emu.url))
    stranger = Bot("42:NOT-THE-TOKEN", session=session)
    try:
        with pytest.raises(TelegramUnauthorizedError):
            await stranger.get_me()
    finally:
        await stranger.session.close()


async def test_text_length_counts_after_entity_parsing(bot: Bot, emu: Emulator, pond: int) -> None:
    await bot.send_message(pond, "a" * 4096)
    await bot.send_message(pond, "<b>" + "a" * 4096 + "</b>", parse_mode="HTML")
    await bot.send_message(pond, "😀" * 2048)  # 4096 UTF-16 code units
    emu.assert_no_violations()
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(pond, "a" * 4097)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(pond, "😀" * 2049)
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(pond, "<b> </b>", parse_mode="HTML")
    assert len(emu.violations) == 3


async def test_callback_data_and_button_limits(bot: Bot, emu: Emulator, pond: int) -> None:
    await bot.send_message(pond, "ok", reply_markup=keyboard("签" * 21))  # 63 bytes
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(pond, "x", reply_markup=keyboard("签" * 22))  # 66 bytes
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(pond, "x", reply_markup=keyboard("a" * 65))
    with pytest.raises(TelegramBadRequest, match="button text is empty"):
        await bot.send_message(pond, "x", reply_markup=keyboard("a", text=" "))
    assert len(emu.violations) == 3


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("<b>&</b>", "Character '&' at byte offset 3"),
        ("<x>hi</x>", 'Unsupported start tag "x"'),
        ("Tom < Jerry", 'Unsupported start tag ""'),
        ("<b>bold <i>both</b></i>", "Unmatched end tag"),
        ("<b>never closed", "Can't find end tag"),
        ("&nbsp;", "Unsupported HTML entity"),
        ('<span class="red">x</span>', "tg-spoiler"),
    ],
)
async def test_bad_html_is_rejected(
    bot: Bot, emu: Emulator, pond: int, text: str, error: str
) -> None:
    with pytest.raises(TelegramBadRequest, match="can't parse entities") as info:
        await bot.send_message(pond, text, parse_mode="HTML")
    assert error in info.value.message
    assert emu.violations[-1]["method"] == "sendMessage"
    assert emu.violations[-1]["params"]["text"] == text


async def test_valid_and_escaped_html_passes(bot: Bot, emu: Emulator, pond: int) -> None:
    name = '<Tom & "Jerry">'
    message = await bot.send_message(
        pond,
        f"<b>{html.escape(name)}</b> got <i>+50</i> &#127881; "
        '<a href="https://t.me/x?a=1&amp;b=2">rules</a> <tg-spoiler>s</tg-spoiler> '
        '<span class="tg-spoiler">s</span> <u>u</u><s>s</s> <code>c</code>\n'
        '<pre><code class="language-python">print(1)</code></pre>'
        "<blockquote expandable>q</blockquote>",
        parse_mode="HTML",
    )
    assert message.text is not None and message.text.startswith('<Tom & "Jerry"> got +50 🎉')
    kinds = [e.type for e in message.entities or []]
    assert kinds[:2] == ["bold", "italic"]
    assert "pre" in kinds and "text_link" in kinds and "expandable_blockquote" in kinds
    emu.assert_no_violations()


async def test_caption_callback_answer_and_poll_limits(bot: Bot, emu: Emulator, pond: int) -> None:
    with pytest.raises(TelegramBadRequest, match="caption is too long"):
        await bot.send_photo(pond, "AgACAgIAAxkBAAEphoto", caption="c" * 1025)
    with pytest.raises(TelegramBadRequest, match="text must be 0-200 characters"):
        await bot.answer_callback_query("123", text="x" * 201)
    options = [InputPollOption(text=str(i)) for i in range(13)]
    with pytest.raises(TelegramBadRequest, match="options must have 1-12 items"):
        await bot.send_poll(pond, "Which?", options)
    with pytest.raises(TelegramBadRequest, match="question must be 1-300"):
        await bot.send_poll(pond, "q" * 301, options[:2])
    await bot.send_poll(pond, "Which?", options[:12])
    assert len(emu.violations) == 4


async def test_markdown_v2(bot: Bot, emu: Emulator, pond: int) -> None:
    message = await bot.send_message(pond, r"*bold* and \.escaped\!", parse_mode="MarkdownV2")
    assert message.text == "bold and .escaped!"
    with pytest.raises(TelegramBadRequest, match="reserved"):
        await bot.send_message(pond, "Total: 5.", parse_mode="MarkdownV2")
    assert len(emu.violations) == 1


def test_html_parser_entities_use_utf16_offsets() -> None:
    text, entities = parse_html("😀 <b>hi</b>")
    assert text == "😀 hi"
    assert entities == [{"type": "bold", "offset": 3, "length": 2}]
    with pytest.raises(ParseError):
        parse_markdown_v2("*open")
