"""A CSV (or JSON-lines) target column read chunk by chunk and held compactly: for a
classification loss, int32 codes into a vocabulary of the distinct cells (4 bytes a row, however
long the labels); for a regression loss, float32 values. The vocabulary is then encoded once (a
row per distinct label) and the codes index it, so a 28-million-row file never holds its labels
as strings. Errors name the file, the line and the column, as csv._targets does for a whole column."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nncli.data.csv import _targets as column_targets, is_missing
from nncli.data.table import FLOAT32_MAX
from nncli.data.targets import MAX_CLASSES
from nncli.errors import DataError

CLASSIFICATION_LOSSES = ("categorical_crossentropy", "binary_crossentropy")
VOCABULARY_CAP = 4 * MAX_CLASSES  # distinct cells kept before a classification target is refused


class TargetColumn:
    def __init__(self, path: str, name: str, loss: str, missing: Sequence[str]):
        self.path, self.name, self.missing = path, name, tuple(missing)
        self.classify = loss in CLASSIFICATION_LOSSES
        self.parts: list[np.ndarray] = []
        self.vocabulary: dict[str, int] = {}
        self.n_missing, self.missing_lines = 0, []
        self.has_name = False  # a cell equal to the column's name (the header row read as data?)

    def observe(self, cells: np.ndarray, lines: np.ndarray) -> None:
        """Take one chunk: `cells` the stripped target cells, `lines` their line numbers."""
        if not len(cells):
            return
        gone = is_missing(cells, self.missing) | (cells == "")
        if gone.any():
            self.n_missing += int(gone.sum())
            self.missing_lines += lines[gone][:5 - len(self.missing_lines)].tolist()
        self.has_name = self.has_name or bool((cells == self.name).any())
        if self.classify:
            uniq, inverse = np.unique(cells, return_inverse=True)
            ids = np.array([self.vocabulary.setdefault(s, len(self.vocabulary)) for s in uniq.tolist()], np.int32)
            if len(self.vocabulary) > VOCABULARY_CAP:
                raise DataError(f"{self.path}: target '{self.name}': more than {VOCABULARY_CAP:,} distinct classes "
                                f"by line {int(lines[-1])}; is this a regression target?")
            self.parts.append(ids[inverse.reshape(-1)])
            return
        if self.n_missing:  # the error comes after the pass, with the count; keep going cheaply
            return
        try:
            values = cells.astype(np.float64)
        except ValueError:
            bad = next(i for i, c in enumerate(cells.tolist()) if not _parses(c))
            raise DataError(f"{self.path}: line {int(lines[bad])}, column '{self.name}': regression targets must "
                            f"be numbers, got text such as {str(cells[bad])[:30]!r}") from None
        finite = np.isfinite(values)
        if not finite.all():
            raise DataError(f"{self.path}: line {int(lines[int(np.argmax(~finite))])}, column '{self.name}': "
                            f"non-finite target")
        big = np.abs(values) > FLOAT32_MAX
        if big.any():
            raise DataError(f"{self.path}: line {int(lines[int(np.argmax(big))])}, column '{self.name}': a target "
                            f"value is too large for float32 ({float(values[big][0]):.3g})")
        self.parts.append(values.astype(np.float32))

    def finish(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(y, codes): classification: y the typed vocabulary (numbers when every label is one,
        else the strings) and codes one int32 per row indexing it; regression: y the float32
        values, one per row, and codes None. A missing cell is an error saying how many and where."""
        if self.n_missing:
            n, lines = self.n_missing, self.missing_lines
            more = ", ..." if n > len(lines) else ""
            raise DataError(f"{self.path}: line {lines[0]}, column '{self.name}': {n} missing target value"
                            f"{'s' * (n > 1)} (line{'s' * (n > 1)} {', '.join(map(str, lines))}{more}); every row "
                            f"needs a target: drop those rows")
        parts, self.parts = self.parts, []
        if not self.classify:
            return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), None
        codes = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        del parts
        labels = np.array(list(self.vocabulary), dtype=str) if self.vocabulary else np.zeros(0, str)
        return column_targets(self.path, labels, self.name, missing=()), codes


def _parses(cell: str) -> bool:
    try:
        float(cell)  # the parse numpy's astype(float64) uses for each cell
    except ValueError:
        return False
    return True
