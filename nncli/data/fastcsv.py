"""A fast path for big CSV files of plain numbers: a block of complete lines parsed in one compiled
loop (numba, a PyTensor dependency), 7-12x quicker than the csv module and float() (measured:
README, Backends, **Prediction**).

It takes a block only when every cell is a plain decimal number that it can convert exactly, and
says no otherwise, leaving the block to the csv module and float() (csv.read_chunks), which then
word any error as for any other read. Exactly:
- a cell is [spaces] [+|-] digits [. digits] [e|E [+|-] digits] [spaces], with a digit before or
  after the point; nothing else (no quotes, no empty cell, no nan or inf, no missing token);
- each line ends in \\n or \\r\\n (a lone \\r says no), has `width` cells, and is not blank;
- the value is w * 10**q; when w <= 2**53 and |q| <= 22, w and 10**|q| are exact doubles and one
  multiplication or division rounds the exact value correctly (Clinger's fast path, as in
  fast_float): the same double as float() reads. Any other plain number (more digits, a larger
  exponent) is read by float() from its text, and a block with one that float32 cannot hold
  says no;
- memory is bounded before anything is allocated: a block of more than MAX_CELLS cells (a very
  wide file), or with more than MAX_HARD numbers for float(), says no.
"""

from __future__ import annotations

import numpy as np

from nncli.data.table import FLOAT32_MAX

_kernel = None
MAX_CELLS = 1 << 24  # a block of more cells (a very wide file) is left to the csv module: 128 MB as float64
MAX_HARD = 1 << 20   # and so is a block with more cells for float() than this


def _compile():
    import numba

    @numba.njit(nogil=True, cache=False)
    def sign(buf, i, n):  # pragma: no cover - compiled
        """An optional + or - at i: (negative, the index after it)."""
        if i < n and (buf[i] == 45 or buf[i] == 43):
            return buf[i] == 45, i + 1
        return False, i

    @numba.njit(nogil=True, cache=False)
    def parse(buf, delim, width, out, pow10, hard):  # pragma: no cover - compiled
        """Fill out (one row per line of buf); return (rows, hard cells), or (-1, 0): not plain.
        A hard cell is a plain number beyond the fast path: hard[k] = (row * width + col, start,
        end) of its text, left to float()."""
        n = buf.shape[0]
        skip_space = delim != 32
        i = 0
        row = 0
        col = 0
        nhard = 0
        while i < n:
            if skip_space:
                while i < n and buf[i] == 32:
                    i += 1
            begin = i
            neg, i = sign(buf, i, n)
            w = 0
            nd = 0
            q = 0
            digits = False
            point = False
            while i < n:
                if buf[i] == 46 and not point:
                    point = True
                elif 48 <= buf[i] <= 57:
                    d = buf[i] - 48
                    if w != 0 or d != 0:
                        if nd < 18:  # 18 digits fit in int64; more make the cell hard (below)
                            w = w * 10 + d
                            if point:
                                q -= 1
                        nd += 1
                    elif point:  # a zero between the point and the first significant digit
                        q -= 1
                    digits = True
                else:
                    break
                i += 1
            if not digits:
                return -1, 0
            if i < n and (buf[i] == 101 or buf[i] == 69):
                eneg, i = sign(buf, i + 1, n)
                ex = 0
                ed = 0
                while i < n and 48 <= buf[i] <= 57:
                    if ex < 100000:
                        ex = ex * 10 + (buf[i] - 48)
                    ed += 1
                    i += 1
                if ed == 0:
                    return -1, 0
                q += -ex if eneg else ex
            end = i
            if skip_space:
                while i < n and buf[i] == 32:
                    i += 1
            if col == width or row == out.shape[0]:
                return -1, 0
            if w == 0:
                out[row, col] = -0.0 if neg else 0.0
            elif nd > 18 or w > 9007199254740992 or q < -22 or q > 22:
                if nhard == hard.shape[0]:
                    return -1, 0
                hard[nhard, 0] = row * width + col
                hard[nhard, 1] = begin
                hard[nhard, 2] = end
                nhard += 1
            elif q >= 0:
                out[row, col] = -(w * pow10[q]) if neg else w * pow10[q]
            else:
                out[row, col] = -(w / pow10[-q]) if neg else w / pow10[-q]
            col += 1
            if i == n:  # the last line has no line end
                break
            c = buf[i]
            if c == delim:
                i += 1
                if i == n:
                    return -1, 0
            elif c == 10 or (c == 13 and i + 1 < n and buf[i + 1] == 10):
                if col != width:
                    return -1, 0
                row += 1
                col = 0
                i += 1 if c == 10 else 2
            else:
                return -1, 0
        if col != 0:
            if col != width:
                return -1, 0
            row += 1
        return row, nhard
    return parse


_POW10 = np.array([10.0 ** k for k in range(23)])  # exact: 5**22 < 2**53


def parse_block(text: str, delimiter: str, width: int, rows: int) -> np.ndarray | None:
    """The `rows` lines of `text` (complete lines) as a float64 array of shape (rows, width) when
    every cell is a plain number (see above) that float32 can hold, else None."""
    global _kernel
    if (len(delimiter) != 1 or not delimiter.isascii() or width < 1 or len(text) >= 2 ** 31
            or rows * width > MAX_CELLS):
        return None
    try:
        buf = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        return None
    if _kernel is None:
        _kernel = _compile()
    out = np.empty((rows, width), dtype=np.float64)
    hard = np.empty((min(rows * width, MAX_HARD), 3), dtype=np.int64)  # more: the block is refused
    got, nhard = _kernel(buf, ord(delimiter), width, out, _POW10, hard)
    if got != rows:
        return None
    if nhard:  # beyond the fast path: float() reads them
        at, begin, end = hard[:nhard].T
        values = np.array([float(text[b:e]) for b, e in zip(begin.tolist(), end.tolist())])
        if not (np.abs(values) <= FLOAT32_MAX).all():  # inf, or too large: csv.py words it
            return None
        out.reshape(-1)[at] = values
    return out
