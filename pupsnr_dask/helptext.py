"""Help text that click never breaks inside a word: ``--tls-cert``, ``self-contained``.

click wraps help with :class:`textwrap.TextWrapper`, which breaks lines after a hyphen, so an
option name could end one line and go on at the next (``--tls-`` / ``cert``). Here every
hyphen is a non-breaking one (U+2011) while the text is wrapped, and a plain ``-`` again in
the printed help.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

NON_BREAKING_HYPHEN = "\u2011"


def _keep(text: str) -> str:
    return text.replace("-", NON_BREAKING_HYPHEN)


class HelpFormatter(click.HelpFormatter):
    """click's formatter, wrapping only at spaces."""

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        """Write the usage line, wrapped at spaces only."""
        super().write_usage(_keep(prog), _keep(args), prefix)

    def write_text(self, text: str) -> None:
        """Write a paragraph, wrapped at spaces only."""
        super().write_text(_keep(text))

    def write_dl(
        self, rows: Sequence[tuple[str, str]], col_max: int = 30, col_spacing: int = 2
    ) -> None:
        """Write the option table, its help wrapped at spaces only."""
        super().write_dl([(_keep(a), _keep(b)) for a, b in rows], col_max, col_spacing)

    def getvalue(self) -> str:
        """The help, with plain hyphens."""
        return super().getvalue().replace(NON_BREAKING_HYPHEN, "-")


class Context(click.Context):
    """A click context whose help uses :class:`HelpFormatter`."""

    formatter_class = HelpFormatter


class Command(click.Command):
    """A click command whose help uses :class:`HelpFormatter`."""

    context_class = Context
