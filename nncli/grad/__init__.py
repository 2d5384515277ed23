"""`nncli grad`: derivatives of an expression at a point, by PyTensor's symbolic gradient.

- language: the expression language (parse with a whitelist, to and from PyTensor, print)
- derivatives: values, gradients, Hessians, N-th derivatives, their readable form, the plot
- diagnose: the operation that first made a result inf or nan
- compiling: one-off functions (py linker, quiet); libm: running them with the C library's math

Importing any of these imports no PyTensor: it is imported inside the functions
that need it, so `nncli grad --help` stays quick.
"""

from nncli.grad import compiling, derivatives, diagnose, language, libm  # noqa: F401
from nncli.grad.derivatives import GradResult, compute, evaluate, plot

__all__ = ["GradResult", "compute", "evaluate", "plot"]
