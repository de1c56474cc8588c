"""Name -> builder registry for every upsampler, strict about names.

Unlike BasicSR's registry, registering a name twice or asking for an unknown
name is an error that lists the known names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from torch import nn

ModelKind = Literal["resize", "learned"]


class UnknownModelError(KeyError):
    """Raised for a name that is not registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class DuplicateModelError(ValueError):
    """Raised when a name is registered twice."""


@dataclass(frozen=True)
class ModelSpec:
    """Metadata of one registered model.

    Args:
        name: registry name, e.g. ``"espcn"``.
        builder: keyword-only constructor of the ``nn.Module``.
        kind: ``"resize"`` (parameter-free interpolation) or ``"learned"``.
        scales: integer scales a learned model is built for; empty for resizers
            (which take any factor or target size).
        description: one line for humans (``/v1/models``, ``--help``).
        task: ``"upscale"``, or the restoration an x1 model does (``"dejpeg"``, ``"denoise"``).
    """

    name: str
    builder: Callable[..., nn.Module]
    kind: ModelKind
    scales: tuple[int, ...] = ()
    description: str = ""
    task: str = "upscale"


class Registry:
    """A strict mapping from model name to :class:`ModelSpec`."""

    def __init__(self) -> None:
        self._specs: dict[str, ModelSpec] = {}

    def register(
        self,
        name: str,
        *,
        kind: ModelKind,
        scales: tuple[int, ...] = (),
        description: str = "",
        task: str = "upscale",
    ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
        """Class decorator that registers ``builder`` under ``name``."""

        def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
            self.add(ModelSpec(name, builder, kind, tuple(scales), description, task))
            return builder

        return decorator

    def add(self, spec: ModelSpec) -> None:
        if spec.name in self._specs:
            raise DuplicateModelError(f"model name {spec.name!r} is already registered; known names: {self.names()}")
        self._specs[spec.name] = spec

    def get(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(self.names())}") from None

    def build(self, name: str, **kwargs: object) -> nn.Module:
        """Build a fresh (untrained) model by name with keyword arguments."""
        return self.get(name).builder(**kwargs)

    def names(self, kind: ModelKind | None = None) -> list[str]:
        return sorted(n for n, s in self._specs.items() if kind is None or s.kind == kind)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs[n] for n in self.names())


MODELS = Registry()
