"""The registry of tables that README.md and docs/ render (``<!-- table: NAME -->``): one dict of all of them.

Tables of the default run live in :mod:`pipeline.report.tables_results`, those of
the bench programs that measure the software in
:mod:`pipeline.report.tables_results_bench`, those of documented experiments on the embedded corpus in
:mod:`pipeline.report.tables_experiments`; tables of retired studies, each bound
to the corpus and code it was measured on, in :mod:`pipeline.report.tables_studies`.
"""

from __future__ import annotations

from pipeline.report import tables_experiments, tables_results, tables_results_bench, tables_studies
from pipeline.report.docs import DocTable


def all_tables() -> dict[str, DocTable]:
    modules = (tables_results, tables_results_bench, tables_studies, tables_experiments)
    tables = {name: table for module in modules for name, table in module.TABLES.items()}
    assert len(tables) == sum(len(m.TABLES) for m in modules), "a table name is registered twice"
    return tables
