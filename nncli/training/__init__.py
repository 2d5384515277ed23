"""Training: `nncli train`.

    prepare.py  one prepare for a training file in memory or streamed from disk (-> Prepared)
    trainer.py  the loop, checkpoints, resume, signals; train() is the library entry point
    lock.py     one training run per output folder

Importers use the parts: `from nncli.training import trainer`, `trainer.train(...)`.
"""

from nncli.training import lock, prepare, trainer

__all__ = ["lock", "prepare", "trainer"]
