"""nncli: a config-driven neural-network trainer for the command line, built on PyTensor."""

__version__ = "0.1.0"
