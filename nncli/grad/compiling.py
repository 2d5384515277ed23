"""One-off PyTensor functions for `nncli grad`: compiled per call, quietly, with the py linker.

A one-off evaluation should not wait for a C compiler. Functions are
compiled per call (never through ``pytensor.config``) with the pure-Python
linker and the graph rewrites minus fusion/inplace, which is the quickest to
start (see bench/bench_grad.py) and leaves a tidy graph to print; the py
linker is also what ``nncli.grad.libm.evaluate`` walks.

This module imports PyTensor only inside its functions.
"""

from __future__ import annotations

import contextlib
import warnings


def mode(rewrite: bool = True):
    """Pure-Python linker (no C compiler, quickest start); graph rewrites minus fusion/inplace."""
    from pytensor.compile.mode import Mode

    if not rewrite:
        return Mode(linker="py", optimizer=None)
    return Mode(linker="py", optimizer="fast_run").excluding("fusion", "inplace")


@contextlib.contextmanager
def quiet():
    """Keep PyTensor's own warnings/log lines off stderr: the CLI prints one line per problem."""
    import logging

    logger = logging.getLogger("pytensor")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def compile_graph(inputs, outputs, rewrite: bool = True):
    """(function, the outputs as rewritten). Falls back to no rewrites where the rewrites merged
    an op over more than 32 operands, which numpy ufuncs (the py linker) cannot run."""
    import pytensor

    with quiet():
        fn = pytensor.function(inputs, outputs, mode=mode(rewrite), on_unused_input="ignore")
        graphs = tuple(fn.maker.fgraph.outputs)
        if rewrite and any(len(a.inputs) + len(a.outputs) > 32 for a in fn.maker.fgraph.apply_nodes):
            fn = pytensor.function(inputs, outputs, mode=mode(False), on_unused_input="ignore")
    return fn, graphs


def function(inputs, outputs, rewrite: bool = True):
    return compile_graph(inputs, outputs, rewrite)[0]


def graph_size(inputs, outputs) -> int:
    from pytensor.graph.traversal import io_toposort

    return len(io_toposort(list(inputs), list(outputs)))
