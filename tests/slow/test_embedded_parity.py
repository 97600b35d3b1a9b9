"""The real embedded whisper-base: the import is exact (slow: imports, converts, decodes 20 utterances)."""

from __future__ import annotations

import pytest

from pipeline.models.parity import run_import_parity

pytestmark = pytest.mark.slow


def test_embedded_import_is_exact(tmp_path):
    report = run_import_parity(tmp_path)
    assert report["variables_compared"] > 200
    assert report["variables_different"] == [] and report["variables_missing"] == [] and report["variables_extra"] == []
    assert report["utterances"] == 20
    assert report["agree"] >= 19, [r for r in report["per_utterance"] if not r["agree"]]
