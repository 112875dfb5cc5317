"""`chestxray compare`: training runs → report.md with tables, confidence intervals and figures.

The flow is data → numbers → markdown: `reading` reads the run folders and the test split, `numbers` does the
statistics, `markdown` turns numbers into text, `figures` draws, and `command` is the CLI over a typed
`write_report(ReportOptions)`. This module stays light: `compare --help` imports nothing heavy.
"""

from pipeline.errors import UserError


class ReportError(UserError, ValueError):
    """Run folders, a dataset or options that cannot make a report."""
