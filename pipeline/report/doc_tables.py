"""The registry of tables that README.md and docs/ render (``<!-- table: NAME -->``): one dict of all of them.

Tables about the current software and the default run live in
:mod:`pipeline.report.tables_results`; tables of retired studies, each bound
to the corpus and code it was measured on, in :mod:`pipeline.report.tables_studies`.
"""

from __future__ import annotations

from pipeline.report import tables_results, tables_studies
from pipeline.report.docs import DocTable


def all_tables() -> dict[str, DocTable]:
    both = {**tables_results.TABLES, **tables_studies.TABLES}
    assert len(both) == len(tables_results.TABLES) + len(tables_studies.TABLES), "a table name is registered twice"
    return both
