"""Presentation: tables, figures and the HTML page of results and advice.

Nothing in the library imports this package; the command line and notebooks do.

- :mod:`~pupsnr_dask.report.tables` -- the one table renderer (text, markdown, CSV, JSON, HTML)
- :mod:`~pupsnr_dask.report.summary` -- ``format_summary``, SPEC.md's table
- :mod:`~pupsnr_dask.report.advice` -- ``format_advice``, the table of ``advise_depths``
- :mod:`~pupsnr_dask.report.plots` -- the PSNR figure and the PU grid figure
- :mod:`~pupsnr_dask.report.advice_plot` -- ``plot_advice``
- :mod:`~pupsnr_dask.report.html` -- the self-contained HTML page
"""
