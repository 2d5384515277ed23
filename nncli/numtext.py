"""Numbers as text without a Python call per number: `g9_cells` writes each float64 exactly as
Python's ``"%.9g" % x`` does (the digits `predict` and `serve` print), as rows of bytes.

How, and why it is exact:
- a finite nonzero x (|exponent| <= 290) is scaled to s = |x| * 10**(8 - e) in float64 (the
  power of ten read from a table that float() rounded correctly), so that the computed s is within
  2**-52 of the true one relative, under 2.3e-7 absolute since s < 1e9;
- the 9 significant digits are s rounded to an integer. That rounding can only differ from the
  exact decimal rounding when the true s is within that error of a half; every x whose computed s
  lies within 1e-6 of a half (exact ties included) is written by Python's own "%.9g" instead, as
  are zeros, infinities, NaNs and the exponents beyond 290;
- the digits are then placed as C's %g places them: fixed notation when -4 <= exponent < 9 and
  exponent notation otherwise, trailing zeros dropped, the point dropped with them, an exponent of
  at least two digits.
tests/test_numtext.py compares the text with Python's on millions of numbers of every kind.
"""

from __future__ import annotations

import numpy as np

WIDTH = 16  # the longest %.9g of a float64: "-1.23456789e-308"
BLOCK = 1 << 16  # numbers formatted per pass: temporaries of about 100 bytes each, kept in cache
_TIE_MARGIN = 1e-6
_EXP_MAX = 290  # beyond, 10**(8 - e) leaves float64's range: Python writes those
_POW10 = np.array([float(f"1e{k}") for k in range(-_EXP_MAX - 9, _EXP_MAX + 10)])
_POW_OFFSET = _EXP_MAX + 9


def _words(texts: list[bytes]) -> np.ndarray:
    """4-byte texts as uint32 words, so that one 1-D gather places all four bytes."""
    return np.frombuffer(b"".join(texts), dtype=np.uint32)


# Each number's source bytes, five words: "\0-.e", three digits + "0" (three times: the nine
# digits; the first group's "0" serves the zeros of "0.000ddd"), exponent sign + three digits.
_PAD, _MINUS, _POINT, _E, _ZERO = 0, 1, 2, 3, 7
_DIGIT = [4, 5, 6, 8, 9, 10, 12, 13, 14]
_XSIGN, _XDIGITS = 16, 17
_CONST = _words([b"\0-.e"])[0]
_GROUPS = _words([b"%03d0" % i for i in range(1000)])
_EXPONENTS = _words([(b"-%03d" if k < 0 else b"+%03d") % abs(k) for k in range(-_EXP_MAX - 1, _EXP_MAX + 2)])
_TRAILING = np.array([3] + [len(str(i)) - len(str(i).rstrip("0")) for i in range(1, 1000)], dtype=np.int8)


def _layout(neg: bool, form: int, nsig: int) -> np.ndarray:
    """Source-byte indices of one number's text: form 0-12 is fixed notation with exponent
    form - 4; 13 and 14 are exponent notation with a two- and a three-digit exponent."""
    out = [_MINUS] if neg else []
    if form <= 12:
        x = form - 4
        if x >= 0:
            out += _DIGIT[:x + 1] + ([_POINT] + _DIGIT[x + 1:nsig] if nsig > x + 1 else [])
        else:
            out += [_ZERO, _POINT] + [_ZERO] * (-x - 1) + _DIGIT[:nsig]
    else:
        out += _DIGIT[:1] + ([_POINT] + _DIGIT[1:nsig] if nsig > 1 else []) + [_E, _XSIGN]
        out += [_XDIGITS + 1, _XDIGITS + 2] if form == 13 else [_XDIGITS, _XDIGITS + 1, _XDIGITS + 2]
    return np.array(out + [_PAD] * (WIDTH - len(out)), dtype=np.intp)


_LAYOUTS = [_layout(bool(neg), form, nsig) for neg in (0, 1) for form in range(15) for nsig in range(1, 10)]


def _python(values: np.ndarray) -> np.ndarray:
    out = np.zeros((len(values), WIDTH), dtype=np.uint8)
    for i, v in enumerate(values.tolist()):
        text = b"%.9g" % v
        out[i, :len(text)] = np.frombuffer(text, dtype=np.uint8)
    return out


def _block(v: np.ndarray) -> np.ndarray:
    a = np.abs(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.floor(np.log10(a))
    fast = np.isfinite(e) & (np.abs(e) <= _EXP_MAX - 1)
    if not fast.all():
        out = np.empty((len(v), WIDTH), dtype=np.uint8)
        out[fast] = _block(v[fast])
        out[~fast] = _python(v[~fast])
        return out
    e = e.astype(np.int64)
    s = a * _POW10[_POW_OFFSET + 8 - e]
    low, high = s < 1e8, s >= 1e9  # log10 rounded across a power of ten
    if low.any() or high.any():
        e = e - low + high
        s = a * _POW10[_POW_OFFSET + 8 - e]
    whole = np.floor(s)
    frac = s - whole
    tie = np.abs(frac - 0.5) < _TIE_MARGIN
    d = whole.astype(np.int64) + (frac > 0.5)
    carry = d >= 1_000_000_000
    if carry.any():
        d[carry] //= 10
        e = e + carry
    hi, lo = np.divmod(d, 1000)
    hi, mid = np.divmod(hi, 1000)
    src = np.empty((len(d), 5), dtype=np.uint32)
    src[:, 0] = _CONST
    src[:, 1], src[:, 2], src[:, 3] = _GROUPS[hi], _GROUPS[mid], _GROUPS[lo]
    src[:, 4] = _EXPONENTS[e + _EXP_MAX + 1]
    tz = np.where(lo != 0, _TRAILING[lo], np.where(mid != 0, 3 + _TRAILING[mid], 6 + _TRAILING[hi]))
    form = np.where((e >= -4) & (e < 9), e + 4, np.where(np.abs(e) < 100, 13, 14))
    row = (np.signbit(v) * 15 + form) * 9 + (8 - tz)
    bytes_ = src.view(np.uint8)
    out = np.empty((len(d), WIDTH), dtype=np.uint8)
    for key in np.flatnonzero(np.bincount(row, minlength=len(_LAYOUTS))):
        at = np.flatnonzero(row == key)
        out[at] = bytes_[at][:, _LAYOUTS[key]]
    if tie.any():
        out[tie] = _python(v[tie])
    return out


def g9_cells(values: np.ndarray) -> np.ndarray:
    """Each number of `values` (any shape) as the bytes of "%.9g" % float(x), zero-padded to
    WIDTH: an array of shape values.shape + (WIDTH,), dtype uint8."""
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    out = np.empty((len(flat), WIDTH), dtype=np.uint8)
    for start in range(0, len(flat), BLOCK):
        out[start:start + BLOCK] = _block(flat[start:start + BLOCK])
    return out.reshape(*np.shape(values), WIDTH)


def _rows(values: np.ndarray, table: np.ndarray | None, lengths: np.ndarray | None,
          codes: np.ndarray | None) -> bytes:
    n, k = values.shape
    cells = np.zeros((n, k, WIDTH + 1), dtype=np.uint8)
    cells[:, :, :WIDTH] = g9_cells(values)
    cells[:, :-1, WIDTH] = ord(",")
    cells[:, -1, WIDTH] = ord("\n")
    rows = cells.reshape(n, k * (WIDTH + 1))
    keep = rows != 0  # a number's text has no NUL; its padding is NUL
    if table is not None:
        lead = np.arange(table.shape[1]) < lengths[codes][:, None]  # by length: a label may hold NUL
        rows, keep = np.concatenate([table[codes], rows], axis=1), np.concatenate([lead, keep], axis=1)
    return rows[keep].tobytes()


def csv_rows(values: np.ndarray, first: list[str] | None = None, codes: np.ndarray | None = None) -> str:
    """CSV text of a 2-D array, one line per row, numbers written as "%.9g" writes them; with
    `first`, each line starts with the cell first[codes[row]] (text already quoted as CSV needs).
    Written BLOCK numbers at a time, so the temporaries stay in the CPU's cache."""
    table = lengths = None
    if first is not None:
        texts = [t.encode("utf-8") + b"," for t in first]
        lengths = np.array([len(t) for t in texts])
        table = np.zeros((len(texts), lengths.max()), dtype=np.uint8)
        for i, t in enumerate(texts):
            table[i, :len(t)] = np.frombuffer(t, dtype=np.uint8)
    step = max(1, BLOCK // max(1, values.shape[1]))
    parts = [_rows(values[i:i + step], table, lengths, None if codes is None else codes[i:i + step])
             for i in range(0, len(values), step)]
    return b"".join(parts).decode("utf-8")
