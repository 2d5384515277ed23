"""Layers, by YAML name: one registry (``LAYERS``), one module per family.

- base: ``LAYERS``, :class:`Layer` (with its ``kind``), :class:`Context`, :class:`ShapeError`
- core: dense, flatten, reshape, embedding, activation
- merge: add, subtract, multiply, average, maximum, concatenate (multi-input layers)
- conv: conv2d, max_pool2d, avg_pool2d; conv1d: conv1d
- pooling: max_pool1d, avg_pool1d, global_{avg,max}_pool{1,2}d
- attention: multi_head_attention, position_embedding
- recurrent: simple_rnn, lstm, gru (their time loop: recurrence; its batch split over CPU
  devices: batch_shards)
- dropout: dropout; normalization: batch_norm, layer_norm

Importing the package imports every family, and each registers its layers
into ``LAYERS`` (as PyTensor's ``pytensor/link/jax/dispatch/__init__.py``
does). The families import ``nncli.layers.base``, never this package.
To add a layer: a :class:`Layer` subclass with its ``keys`` and ``kind``,
registered with ``@LAYERS.register("word")`` in its family's module.
"""

from nncli.layers import (attention, conv, conv1d, core, dropout, merge, normalization,  # noqa: F401
                          pooling, recurrent)  # (they register)
from nncli.layers.base import KINDS, LAYERS, Context, Layer, Shape, ShapeError

__all__ = ["KINDS", "LAYERS", "Context", "Layer", "Shape", "ShapeError"]
