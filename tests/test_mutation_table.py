"""scripts/mutate.py's table stays applicable: every mutation's text occurs exactly once in its file (a refactor that
moves the code must move the mutation too, or the on-demand mutation check silently loses it), and no two share an
id."""

from __future__ import annotations

import pytest

from helpers import ROOT, script_module


def _mutations():
    return script_module("mutate").MUTATIONS


@pytest.mark.parametrize("mutation", _mutations(), ids=lambda m: m.id)
def test_mutation_applies_once(mutation):
    text = (ROOT / mutation.path).read_text()
    for find, replace in mutation.edits:
        assert text.count(find) == 1, f"{mutation.id}: {find!r} occurs {text.count(find)} times in {mutation.path}"
        assert find != replace, f"{mutation.id}: the edit changes nothing"


def test_mutation_ids_are_unique():
    """The GPU report merges entries by id: two mutations sharing one would overwrite each other's result."""
    ids = [m.id for m in _mutations()]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
