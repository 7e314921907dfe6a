"""The seeded fault schedule: which fault, when, for how long, against which silo.

One seed fixes the whole schedule (kinds, order, gaps, hold times, target picks), so a run
can be replayed with ``GRAINERY_CHAOS_SEED``. Process timing still varies from run to run;
the schedule does not. The first steps are one of each kind in a shuffled order, so even
the short run in ``make test`` mixes every fault.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator
from dataclasses import dataclass


class Fault(enum.Enum):
    KILL = "kill -9, then restart"
    PAUSE = "SIGSTOP past the lease, then SIGCONT"
    GRACEFUL = "graceful restart (SIGTERM, then start)"
    JOIN = "a new silo joins, an old one leaves gracefully"
    STORE = "store restart (AOF, same port)"
    PARTITION = "one silo cut off from the store"


# Faults that hold for a while (a silo down, frozen or cut off): the next one may start
# meanwhile, so two faults overlap.
_HOLDING = (Fault.KILL, Fault.PAUSE, Fault.PARTITION)


@dataclass(frozen=True)
class Step:
    fault: Fault
    gap: float  # seconds to wait before starting it
    hold: float  # seconds the fault lasts (down, frozen, cut off) before it is healed
    pick: float  # in [0, 1): which of the eligible silos (sorted by name) it hits
    overlap: bool  # the next step starts while this one still holds

    def describe(self) -> str:
        tail = ", next overlaps" if self.overlap else ""
        return f"{self.fault.name.lower()} (hold {self.hold:.1f}s{tail})"


def steps(seed: int, lease: float) -> Iterator[Step]:
    """An endless schedule for ``seed``; ``lease`` is the silos' membership lease (seconds),
    so that pauses and partitions outlast it and force a takeover."""
    rng = random.Random(seed)
    first = list(Fault)
    rng.shuffle(first)
    index = 0
    while True:
        fault = first[index] if index < len(first) else rng.choice(list(Fault))
        index += 1
        if fault in (Fault.PAUSE, Fault.PARTITION):
            hold = lease * 1.25 + rng.uniform(0.0, lease * 0.75)
        elif fault is Fault.KILL:
            hold = rng.uniform(0.2, 3.0)
        else:
            hold = rng.uniform(0.0, 2.0)
        yield Step(
            fault=fault,
            gap=rng.uniform(0.3, 2.5),
            hold=round(hold, 2),
            pick=rng.random(),
            overlap=fault in _HOLDING and rng.random() < 0.35,
        )
