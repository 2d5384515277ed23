"""Network outputs to classes (data.class_codes, class_probabilities, decode), which predict's CSV
and .h5 writers share, against the arithmetic written out here."""

from __future__ import annotations

import numpy as np
import pytest

from nncli import data


def test_binary_outputs_are_one_minus_p_and_p_with_the_class_above_a_half():
    enc = data.Encoding("binary", ["no", "yes"])
    out = np.array([[0.2], [0.7], [0.5], [0.9999]], dtype=np.float32)
    probs = data.class_probabilities(enc, out)
    assert probs.dtype == np.float32
    np.testing.assert_array_equal(probs, np.stack([np.float32(1) - out[:, 0], out[:, 0]], axis=1))
    assert data.class_codes(enc, out).tolist() == [0, 1, 0, 1]       # 0.5 is not above a half
    assert data.decode(enc, out).tolist() == ["no", "yes", "no", "yes"]


def test_categorical_outputs_are_their_columns_and_the_argmax():
    enc = data.Encoding("categorical", ["a", "b", "c"])
    out = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(data.class_probabilities(enc, out), out)
    assert data.class_codes(enc, out).tolist() == [1, 0, 2]
    assert data.decode(enc, out).tolist() == ["b", "a", "c"]


def test_regression_outputs_have_no_classes():
    enc = data.Encoding("regression", [])
    with pytest.raises(ValueError):
        data.class_codes(enc, np.zeros((2, 1)))
    with pytest.raises(ValueError):
        data.class_probabilities(enc, np.zeros((2, 1)))
