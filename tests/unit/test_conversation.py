"""The call's chat context: request shape, barge-in truncation, and trimming that keeps tool pairs whole."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trunkline.pipeline.conversation import Conversation

CALL = [{"id": "c1", "type": "function", "function": {"name": "find_slots", "arguments": "{}"}}]


def test_request_starts_with_the_system_prompt_and_copies_messages() -> None:
    conv = Conversation("Be brief.")
    conv.add_user("Hi")
    request = conv.request_messages()
    assert request == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    request[1]["content"] = "changed"
    assert conv.messages[0]["content"] == "Hi"
    assert Conversation("").request_messages() == []


def test_truncate_keeps_what_was_heard() -> None:
    conv = Conversation("s")
    conv.add_user("When do you open?")
    conv.add_assistant("We open at nine. On Saturdays at ten.")
    conv.truncate_last_assistant("We open at nine. ")
    assert conv.messages[-1] == {"role": "assistant", "content": "We open at nine."}
    assert conv.last_assistant_text() == "We open at nine."


def test_truncate_removes_a_reply_nobody_heard() -> None:
    conv = Conversation("s")
    conv.add_user("Hello?")
    conv.add_assistant("Hi there, how can I help?")
    conv.truncate_last_assistant("")
    assert conv.messages == [{"role": "user", "content": "Hello?"}]


def test_truncate_keeps_tool_calls_and_only_touches_the_current_turn() -> None:
    conv = Conversation("s")
    conv.add_user("Book me in")
    conv.add_assistant("Let me check.", CALL)
    conv.add_tool_result("c1", "ok")
    conv.truncate_last_assistant("")
    assert conv.messages[1] == {"role": "assistant", "content": None, "tool_calls": CALL}
    conv.add_user("Hello?")
    conv.truncate_last_assistant("")  # nothing of this turn was said: earlier turns stay as they were
    assert len(conv.messages) == 4


@given(st.lists(st.sampled_from(["user", "assistant", "tools"]), max_size=60), st.integers(2, 12))
def test_trimming_never_orphans_a_tool_result(steps: list[str], max_messages: int) -> None:
    conv = Conversation("s", max_messages=max_messages)
    for n, step in enumerate(steps):
        if step == "user":
            conv.add_user(f"u{n}")
            assert len(conv.messages) <= max_messages
        elif step == "assistant":
            conv.add_assistant(f"a{n}")
        else:
            conv.add_assistant("", [{**CALL[0], "id": f"c{n}"}])
            conv.add_tool_result(f"c{n}", "done")
        asked = {c["id"] for m in conv.messages for c in m.get("tool_calls", ())}
        assert {m["tool_call_id"] for m in conv.messages if m["role"] == "tool"} <= asked
    if steps and steps[-1] == "user":
        assert conv.messages[-1] == {"role": "user", "content": f"u{len(steps) - 1}"}
