"""The registry of distillation loss methods: one ``LossMethod`` per ``--method`` value.

Each method lives in its own module here (``kd.py``, ``dkd.py``, ``ce.py``, ``mse.py``) and is
listed once in ``_BUILT_IN`` below. Everything else reads this registry: ``get_method`` checks a
``LossConfig``'s ``method`` where a loss is built or a run resumed, ``DistillationLoss`` takes a
method's losses, warm-up and bias-aware support from it, ``recipes.py`` derives ``--method
auto``'s recipes from it and the CLI its ``--method`` help. Nothing outside this package names a
method.
"""

from __future__ import annotations

from compressor.losses.methods import ce, dkd, kd, mse
from compressor.losses.methods.base import LossMethod

__all__ = ["LossMethod", "get_method", "method_names", "methods_help", "registered_methods"]

# The registration: this order is the order of the --method help and of the recipes.
_BUILT_IN = (ce.METHOD, kd.METHOD, dkd.METHOD, mse.METHOD)


def _index(methods: tuple[LossMethod, ...]) -> dict[str, LossMethod]:
    by_name: dict[str, LossMethod] = {}
    for method in methods:
        if method.name in by_name:
            raise ValueError(f"loss method {method.name!r} is registered twice")
        by_name[method.name] = method
    return by_name


_REGISTRY = _index(_BUILT_IN)


def registered_methods() -> tuple[LossMethod, ...]:
    """Every method, in registration order."""
    return tuple(_REGISTRY.values())


def method_names() -> tuple[str, ...]:
    """The valid ``LossConfig.method`` / ``--method`` values, in registration order."""
    return tuple(_REGISTRY)


def get_method(name: str) -> LossMethod:
    """The method registered as ``name``; ``ValueError`` naming the valid ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"method must be one of {method_names()}; got {name!r}") from None


def methods_help() -> str:
    """One line per method, ``name: help``, joined by ``"; "`` (for ``--method``'s help)."""
    return "; ".join(f"{m.name}: {m.help}" for m in _REGISTRY.values())
