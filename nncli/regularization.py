"""L1/L2 weight penalties (the top-level ``regularization`` key).

``regularization: {l1: 0.0, l2: 1e-4}`` adds ``l1 * sum|W| + l2 * sum W^2``
(Keras' convention: no 1/2) to the training objective for every weight
tensor: parameters with two or more axes (dense and convolution kernels,
recurrent weight matrices, embeddings), not biases or batch-norm scales.
``layers: {dense_1: {l2: 0.01}, dense_2: {l1: 0, l2: 0}}`` overrides the
global values for the named layers. The penalty changes the gradients only:
the ``loss`` in the logs and metrics.csv is the data loss without it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from nncli.registry import did_you_mean
from nncli.schema import Invalid, Key, described, mapping, mapping_schema, number, show

STRENGTH = number(min=0.0)
_PAIR = {"l1": Key(STRENGTH, None, "L1 strength >= 0"), "l2": Key(STRENGTH, None, "L2 strength >= 0")}


def _layers(value: Any, path: str) -> dict[str, dict[str, float | None]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(path, f"expected a mapping of layer name -> {{l1, l2}}, got {show(value)}")
    return {str(name): mapping(v, f"{path}.{name}", _PAIR, "mapping with l1 and/or l2")
            for name, v in value.items()}


described(_layers, lambda: {"anyOf": [{"type": "null"}, {"type": "object", "additionalProperties": mapping_schema(_PAIR)}]})


KEYS = {
    "l1": Key(STRENGTH, 0.0, "L1 strength for every weight tensor"),
    "l2": Key(STRENGTH, 0.0, "L2 strength for every weight tensor"),
    "layers": Key(_layers, None, "per-layer overrides: {layer_name: {l1: .., l2: ..}}"),
}


def validate(value: Any, path: str) -> dict[str, Any] | None:
    if value is None or value is False:
        return None
    out = mapping(value, path, KEYS, "mapping with l1, l2, layers")
    out["layers"] = out["layers"] or {}
    return out


described(validate, lambda: {"anyOf": [{"type": "null"}, {"const": False}, mapping_schema(KEYS)]})


def check(reg: Mapping[str, Any] | None, layer_names: Sequence[str], path: str = "regularization") -> None:
    if not reg:
        return
    for name in reg["layers"]:
        if name not in layer_names:
            raise Invalid(f"{path}.layers.{name}", f"no layer named '{name}'{did_you_mean(name, list(layer_names))}; "
                                                   f"layers: {', '.join(layer_names)}")


def strengths(reg: Mapping[str, Any] | None, key: str) -> tuple[float, float]:
    """(l1, l2) for a parameter key "<layer>/<param>"."""
    if not reg:
        return 0.0, 0.0
    layer = key.split("/", 1)[0]
    over = reg["layers"].get(layer, {})
    l1 = over.get("l1") if over.get("l1") is not None else reg["l1"]
    l2 = over.get("l2") if over.get("l2") is not None else reg["l2"]
    return float(l1), float(l2)


def penalty(reg: Mapping[str, Any] | None) -> Callable[[Any], Any] | None:
    """A `penalty(net)` for functions.compile_train, or None when there is nothing to add."""
    if not reg or not (reg["l1"] or reg["l2"] or any(v.get("l1") or v.get("l2") for v in reg["layers"].values())):
        return None

    def build(net) -> Any:
        import pytensor.tensor as pt

        total = 0.0
        for key, p in net.params.items():
            if p.ndim < 2:
                continue
            l1, l2 = strengths(reg, key)
            if l1:
                total = total + l1 * pt.sum(pt.abs(p))
            if l2:
                total = total + l2 * pt.sum(pt.sqr(p))
        return total

    return build
