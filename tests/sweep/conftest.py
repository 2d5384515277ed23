"""The sweep tests' module-scoped folder of data and base configs (sweep_support.make_folder)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from sweep_support import make_folder

    return make_folder(tmp_path_factory)
