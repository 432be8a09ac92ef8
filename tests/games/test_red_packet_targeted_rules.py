"""Who may grab a targeted packet (a drop `to=<segment>`): only its segment's members;
a closed packet still says so first, and a member outside the segment is told so rather
than asked for a password they could not use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from games.red_packet import PacketState, PacketView, Refusal, refusal

NOW = datetime(2026, 11, 11, 20, 0, tzinfo=UTC)


def view(**kw: object) -> PacketView:
    base: dict[str, object] = {
        "chat_id": -100, "funder_id": 1, "state": PacketState.open,
        "expires_at": NOW + timedelta(hours=1), "has_password": False, "segment": "gold",
    }
    base.update(kw)
    return PacketView(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("packet", "kw", "why"),
    [
        (view(), {"eligible": True}, None),
        (view(), {"eligible": False}, Refusal.not_for_you),
        (view(segment=None), {"eligible": False}, None),  # untargeted: anyone
        (view(has_password=True), {"eligible": False}, Refusal.not_for_you),
        (view(has_password=True), {"eligible": False, "by_password": True}, Refusal.not_for_you),
        (view(has_password=True), {"eligible": True, "by_password": True}, None),
        (view(state=PacketState.finished), {"eligible": False}, Refusal.gone),
        (view(expires_at=NOW), {"eligible": False}, Refusal.expired),
        (view(), {"eligible": False, "chat_id": -200}, Refusal.wrong_chat),
    ],
)
def test_only_the_segment_grabs_a_targeted_packet(
    packet: PacketView, kw: dict[str, object], why: Refusal | None
) -> None:
    args: dict[str, object] = {
        "user_id": 7, "chat_id": -100, "now": NOW, "by_password": False, "already": False,
    }
    args.update(kw)
    assert refusal(packet, **args) is why  # type: ignore[arg-type]
