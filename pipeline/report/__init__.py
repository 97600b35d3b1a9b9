"""report: the Markdown report and its plots."""
