"""An async client for the emulator's control API (``/_emulator/...``), for tests
in another process and for ``pondbot demo``. Same operations as :class:`Emulator`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp

__all__ = ["EmulatorClient", "EmulatorControlError"]

JSON = dict[str, Any]


class EmulatorControlError(RuntimeError):
    """The emulator refused a control operation."""


class EmulatorClient:
    """``async with EmulatorClient("http://127.0.0.1:PORT") as emu: ...``"""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> EmulatorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, op: str, **kwargs: Any) -> Any:
        """Run one control operation; ``None`` arguments are left out."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = {k: v for k, v in kwargs.items() if v is not None}
        async with self._session.post(f"{self.base_url}/_emulator/{op}", json=body) as resp:
            payload = await resp.json()
        if not payload.get("ok"):
            raise EmulatorControlError(f"{op}: {payload.get('error')}")
        return payload["result"]

    # -- state and users ----------------------------------------------------------

    async def info(self) -> JSON:
        result: JSON = await self.call("info")
        return result

    async def add_user(
        self,
        user_id: int,
        first_name: str,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        is_bot: bool = False,
    ) -> JSON:
        result: JSON = await self.call(
            "add_user", user_id=user_id, first_name=first_name, last_name=last_name,
            username=username, language_code=language_code, is_bot=is_bot,
        )
        return result

    async def block_bot(self, user_id: int, blocked: bool = True) -> None:
        await self.call("block_bot", user_id=user_id, blocked=blocked)

    async def create_group(
        self,
        chat_id: int,
        title: str,
        supergroup: bool = True,
        members: Iterable[int] = (),
        admins: Iterable[int] = (),
        username: str | None = None,
    ) -> JSON:
        result: JSON = await self.call(
            "create_group", chat_id=chat_id, title=title, supergroup=supergroup,
            members=list(members), admins=list(admins), username=username,
        )
        return result

    async def add_bot_to_group(self, chat_id: int, by_user: int, as_admin: bool = True) -> JSON:
        result: JSON = await self.call(
            "add_bot_to_group", chat_id=chat_id, by_user=by_user, as_admin=as_admin
        )
        return result

    async def set_bot_admin(
        self, chat_id: int, admin: bool = True, by_user: int | None = None
    ) -> None:
        await self.call("set_bot_admin", chat_id=chat_id, admin=admin, by_user=by_user)

    async def remove_bot(self, chat_id: int, by_user: int) -> None:
        await self.call("remove_bot", chat_id=chat_id, by_user=by_user)

    async def send_message(
        self,
        chat_id: int,
        user_id: int,
        text: str = "",
        reply_to: int | None = None,
        photo: bool = False,
        sender_chat: int | None = None,
        document: str | None = None,
        file_name: str = "file.txt",
        mime_type: str = "text/plain",
    ) -> JSON:
        result: JSON = await self.call(
            "send_message", chat_id=chat_id, user_id=user_id, text=text, reply_to=reply_to,
            photo=photo, sender_chat=sender_chat, document=document, file_name=file_name,
            mime_type=mime_type,
        )
        return result

    async def click(
        self, chat_id: int, user_id: int, message_id: int, callback_data: str
    ) -> str:
        return str(
            await self.call(
                "click", chat_id=chat_id, user_id=user_id, message_id=message_id,
                callback_data=callback_data,
            )
        )

    async def join(self, chat_id: int, user_id: int, invite_link: str | None = None) -> JSON:
        result: JSON = await self.call(
            "join", chat_id=chat_id, user_id=user_id, invite_link=invite_link
        )
        return result

    async def leave(self, chat_id: int, user_id: int) -> JSON:
        result: JSON = await self.call("leave", chat_id=chat_id, user_id=user_id)
        return result

    async def migrate_group(self, old_id: int, new_id: int) -> JSON:
        result: JSON = await self.call("migrate_group", old_id=old_id, new_id=new_id)
        return result

    async def inject_update(self, update: Mapping[str, Any]) -> JSON:
        result: JSON = await self.call("inject_update", update=dict(update))
        return result

    async def replay(self, update_ids: Iterable[int]) -> list[JSON]:
        result: list[JSON] = await self.call("replay", update_ids=list(update_ids))
        return result

    async def inject_fault(
        self,
        method: str | None = None,
        chat_id: int | None = None,
        kind: str = "429",
        times: int = 1,
        retry_after: int = 3,
        migrate_to: int | None = None,
        hang: float = 30.0,
    ) -> None:
        await self.call(
            "inject_fault", method=method, chat_id=chat_id, kind=kind, times=times,
            retry_after=retry_after, migrate_to=migrate_to, hang=hang,
        )

    async def clear_faults(self) -> None:
        await self.call("clear_faults")

    async def set_flood_limits(self, enabled: bool) -> None:
        await self.call("set_flood_limits", enabled=enabled)

    # -- reading what the bot did -------------------------------------------------

    async def callback_answer(self, query_id: str) -> JSON | None:
        result: JSON | None = await self.call("callback_answer", query_id=query_id)
        return result

    async def wait_callback_answer(self, query_id: str, timeout: float = 5.0) -> JSON | None:  # noqa: ASYNC109
        result: JSON | None = await self.call(
            "wait_callback_answer", query_id=query_id, timeout=timeout
        )
        return result

    async def messages_in(self, chat_id: int) -> list[JSON]:
        result: list[JSON] = await self.call("messages_in", chat_id=chat_id)
        return result

    async def events(self, since: int = 0) -> list[JSON]:
        result: list[JSON] = await self.call("events", since=since)
        return result

    async def transcript(self) -> list[JSON]:
        return await self.events()

    async def render(self, chat_id: int | None = None) -> str:
        return str(await self.call("transcript", chat_id=chat_id))

    async def violations(self) -> list[JSON]:
        result: list[JSON] = await self.call("violations")
        return result

    async def assert_no_violations(self) -> None:
        violations = await self.violations()
        if violations:
            lines = [f"{v['method']}: {v['description']}" for v in violations]
            raise AssertionError("Bot API spec violations:\n" + "\n".join(lines))

    async def warnings(self) -> list[str]:
        result: list[str] = await self.call("warnings")
        return result

    async def errors(self) -> list[JSON]:
        result: list[JSON] = await self.call("errors")
        return result

    async def stats(self) -> JSON:
        result: JSON = await self.call("stats")
        return result

    async def wait_for_event(
        self, predicate: Callable[[JSON], bool], timeout: float = 5.0, since: int = 0  # noqa: ASYNC109
    ) -> JSON:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no matching event within {timeout}s")
            events: list[JSON] = await self.call(
                "wait_events", since=since, timeout=min(remaining, 5.0)
            )
            for event in events:
                if predicate(event):
                    return event
            if events:
                since = int(events[-1]["seq"])

    async def wait_for_message(
        self,
        chat_id: int,
        predicate: Callable[[JSON], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
        since: int | None = None,
        contains: str | None = None,
    ) -> JSON:
        """The first bot message in ``chat_id`` after ``since`` (default: after the
        last thing a user did there) whose text contains ``contains`` and satisfies
        ``predicate``; returned in its current (edited) state."""
        if predicate is None:
            result: JSON = await self.call(
                "wait_for_message", chat_id=chat_id, contains=contains, timeout=timeout,
                since=since,
            )
            return result
        if since is None:
            events = await self.events()
            since = max(
                (int(e["seq"]) for e in events
                 if e["chat_id"] == chat_id and e["actor"] == "user"),
                default=0,
            )

        def matches(event: JSON) -> bool:
            return bool(event["kind"] == "bot_message" and event["chat_id"] == chat_id)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            event = await self.wait_for_event(matches, max(remaining, 0.01), since)
            since = int(event["seq"])
            current = {m["message_id"]: m for m in await self.messages_in(chat_id)}
            message = current.get(event["message_id"])
            if message is None:
                continue
            text = str(message.get("text", message.get("caption", "")))
            if (contains is None or contains in text) and predicate(message):
                return message
