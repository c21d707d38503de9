"""One typed registry per concept (docs/architecture.md, Registries): `Registry[Spec]` is the only mechanism.

A spec is a frozen dataclass with at least a `name` (what code, the database and the CLI say) and a `label` (what
a person reads). A registry keeps its specs in registration order; `get(name)` refuses an unknown name in one line
naming the choices. Entry points are written as "module:attribute" strings and imported only by `load`, when the
thing runs, so a registry module imports nothing heavy (the CLI starts without torch). Standard library only.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from typing import Any, Generic, Iterator, TypeVar


@dataclass(frozen=True)
class Spec:
    name: str
    label: str


S = TypeVar("S", bound=Spec)


class UnknownName(ValueError):
    """A name no spec of the registry has; the message is one line naming the choices."""


def load(entry: str) -> Any:
    """The object a "module:attribute" entry point names (imports the module)."""
    mod, sep, attr = entry.partition(":")
    if not sep or not mod or not attr:
        raise ValueError(f"entry point {entry!r} must read 'module:attribute'")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[S]):
    """Specs of one concept, by name, in registration order."""

    def __init__(self, concept: str, specs: tuple[S, ...] | list[S] = ()):
        self.concept = concept
        self._specs: dict[str, S] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: S) -> S:
        if not spec.name or not spec.label:
            raise ValueError(f"a {self.concept} needs a name and a label, got {spec!r}")
        if spec.name in self._specs:
            raise ValueError(f"{self.concept} {spec.name!r} is registered twice")
        self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> S:
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            raise UnknownName(f"unknown {self.concept} {name!r}; choose one of {', '.join(self._specs)}") from None

    def names(self, **where: Any) -> list[str]:
        """Registered names in order; keyword arguments keep the specs whose fields equal them (`kind="faithfulness"`),
        or contain them when the field is a tuple (`groups="evaluation"`)."""
        return [s.name for s in self.specs(**where)]

    def specs(self, **where: Any) -> list[S]:
        def keep(s: S) -> bool:
            for k, v in where.items():
                have = getattr(s, k)
                if not (v in have if isinstance(have, tuple) and not isinstance(v, tuple) else have == v):
                    return False
            return True

        return [s for s in self._specs.values() if keep(s)]

    def labels(self, **where: Any) -> dict[str, str]:
        """{name: label} in order (filtered as names())."""
        return {s.name: s.label for s in self.specs(**where)}

    def label(self, name: str) -> str:
        """The label of a registered name; an unknown name is shown as itself (a stored row of a removed method)."""
        spec = self._specs.get(name)
        return spec.label if spec else name

    def choices(self, sep: str = " | ", **where: Any) -> str:
        """The names for a help text: 'a | b | c'."""
        return sep.join(self.names(**where))

    def fields(self) -> list[str]:
        spec = next(iter(self._specs.values()), None)
        return [f.name for f in fields(spec)] if spec is not None else ["name", "label"]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[S]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"Registry({self.concept!r}: {', '.join(self._specs)})"
