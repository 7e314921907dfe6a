"""Per-activation memory cost of keeping the last persisted state as JSON bytes.

An activation keeps the bytes it last read or wrote so that a failed turn can restore
``self.state`` (README "State rules"); this measures that cost against the decoded state
itself, with tracemalloc. Run: ``.venv/bin/python -m bench.state_memory``.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

from grainery.silo.storage.state_codec import decode_state, encode_state

N = 10_000


def state(kind: str, i: int) -> dict[str, Any]:
    if kind == "empty":
        return {}
    if kind == "counter":
        return {"value": i}
    messages = [{"role": "user" if j % 2 else "assistant", "text": f"message {j} of {i} " * 4}
                for j in range(20)]
    return {"messages": messages, "plan": ["step"] * 5, "turns": i}


def traced(build: Any) -> float:
    tracemalloc.start()
    kept = build()
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return size / N


def main() -> None:
    for kind in ("empty", "counter", "agent"):
        raws = [encode_state(state(kind, i)) for i in range(N)]
        kept = traced(lambda raws=raws: [bytes(bytearray(r)) if r else r for r in raws])
        decoded = traced(lambda raws=raws: [decode_state(r) for r in raws])
        print(f"{kind:8s} JSON {len(raws[0]):5d} B: kept bytes {kept:7.1f} B/activation, "
              f"the state dict itself {decoded:7.1f} B/activation")


if __name__ == "__main__":
    main()
