"""One registry of verifiable instructions for IFEval, the simulated world and `rm_lab evaluate`.

Strict mode judges the response as written. Loose mode also tries the response with its first line,
last line or both removed, each with and without markdown asterisks, and passes if any of those
variants passes: it forgives a chatty preamble/sign-off or emphasis markup around an otherwise
compliant answer. An empty (all-space) response, or variant, never follows an instruction.
"""

from __future__ import annotations

from typing import Any, Iterable

from rm_lab.evaluate import checkers_character, checkers_ifeval
from rm_lab.evaluate.instruction_base import Checker, InstructionError, Kwarg

__all__ = ["Checker", "InstructionError", "Kwarg", "REGISTRY", "IFEVAL_IDS", "validate_kwargs",
           "check", "check_many", "loose_variants", "describe"]

REGISTRY: dict[str, Checker] = {}
for _c in checkers_ifeval.CHECKERS + checkers_character.CHECKERS:
    if _c.instruction_id in REGISTRY:  # pragma: no cover - a programming error
        raise RuntimeError(f"instruction {_c.instruction_id!r} registered twice")
    REGISTRY[_c.instruction_id] = _c

IFEVAL_IDS: tuple[str, ...] = tuple(c.instruction_id for c in checkers_ifeval.CHECKERS)


def get_checker(instruction_id: str) -> Checker:
    try:
        return REGISTRY[instruction_id]
    except (KeyError, TypeError):
        raise InstructionError(instruction_id, None, instruction_id,
                               f"a known instruction id, one of {sorted(REGISTRY)}") from None


def validate_kwargs(instruction_id: str, kwargs: dict | None) -> dict:
    """Normalised kwargs for `instruction_id`.

    Keys whose value is None are dropped first: some IFEval exports list every kwarg of every
    instruction type with null for the unused ones.
    """
    checker = get_checker(instruction_id)
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise InstructionError(instruction_id, None, kwargs, "kwargs as an object (dict) or null")
    spec = checker.kwargs_spec
    given = {k: v for k, v in kwargs.items() if v is not None}
    unknown = sorted(set(given) - set(spec), key=str)
    if unknown:
        expected = ("no kwargs" if not spec else f"only kwargs {sorted(spec)}")
        raise InstructionError(instruction_id, str(unknown[0]), given[unknown[0]], expected)
    out: dict[str, Any] = {}
    for name, kw in spec.items():
        if name not in given:
            if kw.required:
                raise InstructionError(instruction_id, name, None, f"a value ({kw.kind}); it is required")
            continue
        out[name] = kw.normalise(instruction_id, given[name])
    if checker.validate is not None:
        problem = checker.validate(out)
        if problem:
            raise InstructionError(instruction_id, None, out, problem)
    return out


def loose_variants(response: str) -> list[str]:
    """The response variants loose mode tries, in order (the response itself first)."""
    lines = response.split("\n")
    trimmed = [response,
               "\n".join(lines[1:]).strip(),
               "\n".join(lines[:-1]).strip(),
               "\n".join(lines[1:-1]).strip()]
    return trimmed + [t.replace("*", "") for t in trimmed]


def _run(checker: Checker, texts: Iterable[str], kwargs: dict, prompt: str) -> bool:
    return any(t.strip() and checker.fn(t, kwargs, prompt) for t in texts)


def _needs_prompt(checker: Checker, kwargs: dict, prompt: str) -> None:
    if checker.instruction_id == "combination:repeat_prompt" and not kwargs.get("prompt_to_repeat") \
            and not (prompt or "").strip():
        raise InstructionError(checker.instruction_id, "prompt_to_repeat", None,
                               "the text to repeat, as this kwarg or as the prompt")


def check(instruction_id: str, response: str, kwargs: dict | None = None, prompt: str = "",
          loose: bool = False) -> bool:
    """Whether `response` follows the instruction (strict, or loose when `loose`)."""
    checker = get_checker(instruction_id)
    kw = validate_kwargs(instruction_id, kwargs)
    _needs_prompt(checker, kw, prompt)
    if not isinstance(response, str):
        raise InstructionError(instruction_id, None, response, "the response as a string")
    texts = loose_variants(response) if loose else [response]
    return _run(checker, texts, kw, prompt)


def check_many(instruction_ids: list[str], kwargs_list: list[dict], response: str, prompt: str = "",
               loose: bool = False) -> list[bool]:
    """One verdict per instruction on one response; kwargs are validated before anything is checked."""
    ids = list(instruction_ids)
    kws = list(kwargs_list) if kwargs_list is not None else [None] * len(ids)
    if len(kws) != len(ids):
        raise InstructionError(ids, "kwargs", kwargs_list,
                               f"one kwargs entry per instruction ({len(ids)}), got {len(kws)}")
    if not isinstance(response, str):
        raise InstructionError(ids, None, response, "the response as a string")
    prepared = []
    for iid, kw in zip(ids, kws):
        checker = get_checker(iid)
        norm = validate_kwargs(iid, kw)
        _needs_prompt(checker, norm, prompt)
        prepared.append((checker, norm))
    texts = loose_variants(response) if loose else [response]
    return [_run(checker, texts, norm, prompt) for checker, norm in prepared]


def describe() -> list[dict]:
    """The registry as rows (id, description, kwargs) — for docs and `--help` listings."""
    return [{"instruction_id": c.instruction_id, "description": c.description,
             "kwargs": {k.name: k.kind + ("" if k.required else "?") for k in c.kwargs}}
            for c in REGISTRY.values()]
