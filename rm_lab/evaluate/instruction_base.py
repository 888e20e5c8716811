"""Types shared by the instruction checkers: the error, the kwargs spec and the checker record.

Kept apart from `instructions.py` so that checker modules can import them without a cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from rm_lab.schema import RecordError

RELATIONS = ("less than", "at least")


class InstructionError(RecordError):
    """An unknown instruction id or kwargs that do not fit it.

    A RecordError (hence a ValueError) so the CLI reports it like any bad record, without a traceback.
    """

    def __init__(self, instruction_id: Any, kwarg: str | None, value: Any, expected: str):
        self.instruction_id, self.kwarg = instruction_id, kwarg
        self.path, self.row, self.field, self.value, self.expected = None, None, kwarg, value, expected
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        where = f"instruction {instruction_id!r}" + (f", kwarg {kwarg!r}" if kwarg else "")
        ValueError.__init__(self, f"{where}: got {shown}, expected {expected}")


@dataclass(frozen=True)
class Kwarg:
    """One keyword argument of an instruction. kind: int | str | str_list."""

    name: str
    kind: str
    required: bool = True
    choices: tuple | None = None
    min: int | None = None
    doc: str = ""

    def normalise(self, instruction_id: str, value: Any) -> Any:
        def bad(expected: str):
            return InstructionError(instruction_id, self.name, value, expected)

        if self.kind == "int":
            if isinstance(value, bool):
                raise bad("an integer")
            if isinstance(value, float) and math.isfinite(value) and value == int(value):
                value = int(value)
            try:
                import numpy as np

                if isinstance(value, np.integer):
                    value = int(value)
            except ImportError:  # pragma: no cover
                pass
            if not isinstance(value, int):
                raise bad("an integer")
            if self.min is not None and value < self.min:
                raise bad(f"an integer >= {self.min}")
        elif self.kind == "str":
            if not isinstance(value, str) or not value.strip():
                raise bad("a non-empty string")
        elif self.kind == "str_list":
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
                raise bad("a non-empty list of strings")
            items = list(value)
            if not all(isinstance(v, str) and v.strip() for v in items):
                raise bad("a non-empty list of non-empty strings")
            value = items
        else:  # pragma: no cover - a programming error in a spec
            raise ValueError(f"unknown kwarg kind {self.kind!r}")
        if self.choices is not None and value not in self.choices:
            raise bad(f"one of {list(self.choices)}")
        return value


@dataclass(frozen=True)
class Checker:
    """A verifiable instruction: `fn(response, kwargs, prompt) -> bool` on already-normalised kwargs."""

    instruction_id: str
    description: str
    fn: Callable[[str, dict, str], bool]
    kwargs: tuple[Kwarg, ...] = ()
    validate: Callable[[dict], str | None] | None = field(default=None, repr=False)
    """Cross-kwarg check: returns what was expected when the combination is bad, else None."""

    @property
    def kwargs_spec(self) -> dict[str, Kwarg]:
        return {k.name: k for k in self.kwargs}
