"""An agent team: a planner and a critic that call each other, on the call pipeline.

``Planner.plan(goal)`` drafts steps and asks the ``Critic`` to review them; when a step is
vague, the critic calls the planner back (``clarify``) in the middle of that review. That
is a call cycle Planner -> Critic -> Planner: it runs because the planner sets
``allow_call_chain_reentrancy`` (without it, the silo refuses the cycle at once with
``deadlock``). The team also shows the request context (a tenant set by the caller reaches
both agents), a stateless worker (``WordCount``, a tool any silo runs locally), a one-way
call (the planner files each finished plan with the ``Archive`` without waiting) and a
silo-wide call filter (``audit``: run with ``--filter examples.team:audit``). The "models"
are deterministic stand-ins, so it runs offline.
"""

from __future__ import annotations

from typing import Any

from grainery import Grain, one_way, read_only, stateless_worker

VAGUE = ("something", "stuff", "somehow")


class Planner(Grain):
    allow_call_chain_reentrancy = True  # the critic may call back while plan() waits on it

    async def plan(self, goal: str) -> dict[str, Any]:
        steps = [f"research {goal}", f"do something about {goal}", f"report on {goal}"]
        review = await self.get_grain("Critic", self.key).review(steps)
        result = {
            "goal": goal,
            "steps": review["steps"],
            "verdict": review["verdict"],
            "tenant": self.call_context.values.get("tenant", ""),
        }
        self.state.setdefault("plans", []).append(result)
        await self.write_state()
        await self.get_grain("Archive", self.key).file(goal)  # one-way: returns at once
        return result

    async def clarify(self, step: str) -> str:
        """Called by the critic in the middle of its review (back through the call chain)."""
        return step.replace("do something about", "draft three options for")

    @read_only
    async def plans(self) -> list[dict[str, Any]]:
        return list(self.state.get("plans", []))


class Critic(Grain):
    async def review(self, steps: list[str]) -> dict[str, Any]:
        planner = self.get_grain("Planner", self.key)
        checked = []
        for step in steps:
            if any(word in step for word in VAGUE):
                step = await planner.clarify(step)  # Critic -> Planner: the cycle
            words = await self.get_grain("WordCount", "tool").count(step)
            checked.append(f"{step} ({words} words)")
        return {"steps": checked, "verdict": "approved",
                "tenant": self.call_context.values.get("tenant", "")}


@stateless_worker(max_local=4)
class WordCount(Grain):
    """A tool: no state, runs on whichever silo calls it, up to 4 at once per silo."""

    async def count(self, text: str) -> int:
        return len(text.split())


class Archive(Grain):
    @one_way
    async def file(self, goal: str) -> None:
        self.state.setdefault("goals", []).append(goal)
        await self.write_state()

    @read_only
    async def goals(self) -> list[str]:
        return list(self.state.get("goals", []))


AUDITED: list[str] = []


async def audit(call: Any, proceed: Any) -> Any:
    """A silo-wide call filter: remembers every call that runs on this silo."""
    AUDITED.append(f"{call.target} tenant={call.context.get('tenant', '-')}")
    return await proceed()
