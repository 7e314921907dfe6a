"""Example grains: chat agents with durable memory, and a counter.

``ChatAgent`` is the typical Grainery grain: a long-lived identity (its key)
whose memory (conversation, facts it was told) lives in ``self.state`` and
survives deactivation, silo crashes and restarts. The "model" is a small
deterministic stand-in so the demo runs offline; swap in a real LLM call in
``StandInModel.reply``.
"""

from __future__ import annotations

import re
from typing import Any

from grainery.silo import Grain

MAX_HISTORY = 50


class StandInModel:
    """A deterministic, offline stand-in for a language model."""

    _name = re.compile(r"\bmy name is (\w+)", re.IGNORECASE)
    _remember = re.compile(r"\bremember (?:that )?(.+)", re.IGNORECASE)

    def reply(self, memory: dict[str, Any], message: str) -> str:
        if match := self._name.search(message):
            memory["name"] = match.group(1)
            return f"Nice to meet you, {match.group(1)}."
        if match := self._remember.search(message):
            memory.setdefault("notes", []).append(match.group(1).rstrip("."))
            return "Noted."
        lowered = message.lower()
        if "my name" in lowered:
            name = memory.get("name")
            return f"Your name is {name}." if name else "You have not told me your name."
        if "what do you remember" in lowered:
            notes = memory.get("notes", [])
            return "I remember: " + "; ".join(notes) + "." if notes else "Nothing yet."
        return f"I have heard {memory.get('turns', 0)} messages from you."


class ChatAgent(Grain):
    """An agent with conversation memory. Every reply is durable before it is returned."""

    model = StandInModel()

    async def chat(self, message: str) -> dict[str, Any]:
        if not isinstance(message, str) or not message.strip():
            raise ValueError("message must be a non-empty string")
        memory = self.state.setdefault("memory", {})
        memory["turns"] = memory.get("turns", 0) + 1
        reply = self.model.reply(memory, message)
        history = self.state.setdefault("history", [])
        history += [{"role": "user", "text": message}, {"role": "agent", "text": reply}]
        del history[:-MAX_HISTORY]
        await self.write_state()
        await self.get_grain("Counter", "messages").add(1)  # a grain-to-grain call
        return {"reply": reply, "silo": self.silo_id, "turns": memory["turns"]}

    async def history(self) -> list[dict[str, str]]:
        return list(self.state.get("history", []))

    async def forget(self) -> None:
        await self.clear_state()


class Counter(Grain):
    """The smallest useful grain: a durable counter."""

    async def add(self, n: int) -> int:
        self.state["value"] = self.state.get("value", 0) + n
        await self.write_state()
        return int(self.state["value"])

    async def get(self) -> int:
        return int(self.state.get("value", 0))

    async def reset(self) -> None:
        await self.clear_state()
