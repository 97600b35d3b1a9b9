"""Rendered tables of the current software: the default run's results, speed, size (see pipeline.report.docs)."""

from __future__ import annotations

from pipeline.report.docs import DocTable

TABLES: dict[str, DocTable] = {}
