"""Rendered tables of retired studies, each claiming the corpus and code it was measured on (see pipeline.report.docs)."""

from __future__ import annotations

from pipeline.report.docs import DocTable

TABLES: dict[str, DocTable] = {}
