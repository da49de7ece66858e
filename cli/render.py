"""Markdown on a terminal: `rich` renders replies that use markdown; piped output stays plain.

A streamed reply is printed raw, token by token, as it arrives. Once its text is complete,
`Renderer.redraw` moves the cursor back to where the reply started, erases it and prints the
rendered version in its place. A reply taller than the screen cannot be erased that way (its
top has scrolled off), so its rendered version is printed below it, under a rule.
"""

import re
from typing import TextIO

# rich is imported only once output goes to a terminal: piped runs start without its cost.

_MARKDOWN = re.compile(
    r"^ {0,3}#{1,6}\s"  # heading
    r"|^\s*(?:[-*+]|\d{1,9}[.)])\s+\S"  # list item
    r"|^ {0,3}>"  # block quote
    r"|^ {0,3}(?:```|~~~)"  # code fence
    r"|^\s*\|.*\|\s*$"  # table row
    r"|`[^`\n]+`"  # inline code
    r"|(\*\*|__)(?=\S)[^\n]+?(?<=\S)\1"  # strong
    r"|(?<![\w*])\*(?=[^\s*])[^*\n]*(?<=[^\s*])\*(?![\w*])"  # emphasis: *it*, not 2 * 3 * 4
    r"|(?<![\w_])_(?=[^\s_])[^_\n]*(?<=[^\s_])_(?![\w_])"  # emphasis: _it_, not snake_case_
    r"|\[[^\]\n]+\]\([^)\s]+\)",  # link
    re.MULTILINE,
)


def has_markdown(text: str) -> bool:
    """Whether rendering would change how `text` looks (no markdown: leave it as printed)."""
    return _MARKDOWN.search(text) is not None


class Renderer:
    def __init__(self, out: TextIO, size: tuple[int, int] | None = None) -> None:
        """`size`: (columns, rows); the terminal's own, as it is now, by default."""
        from rich.console import Console

        width, height = size or (None, None)
        self._console = Console(file=out, highlight=False, width=width, height=height)

    @classmethod
    def for_output(cls, out: TextIO, plain: bool = False) -> "Renderer | None":
        """A renderer when `out` is a terminal that can show it; None: print plain text."""
        if plain or not out.isatty():
            return None
        renderer = cls(out)
        if renderer._console.is_dumb_terminal:  # TERM=dumb: no cursor movement, no styles
            return None
        return renderer

    def block(self, label: str, text: str) -> None:
        """`label` followed by `text` rendered as markdown, indented to line up after it."""
        from rich.markdown import Markdown
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")  # a long word (a URL) breaks, never gets cut
        grid.add_row(label, Markdown(text))
        self._console.print(grid)

    def redraw(self, label: str, text: str) -> None:
        """Replace `label + text`, printed raw from the start of a line up to the cursor,
        with its rendering. Leaves the cursor at the start of the next line."""
        from rich.markdown import Markdown
        from rich.rule import Rule

        width, height = self._console.size
        rows = _rows(label + text, width)
        if rows < height:
            up = f"\x1b[{rows - 1}A" if rows > 1 else ""
            self._console.file.write(f"\r{up}\x1b[J")  # back to the label, erase to the end
            self.block(label.rstrip(), text)
        else:
            self._console.file.write("\n")
            self._console.print(Rule("rendered", style="dim"))
            self._console.print(Markdown(text))


def _rows(text: str, width: int) -> int:
    """Terminal rows `text` takes when printed from the start of a line on `width` columns."""
    from rich.cells import cell_len

    return sum(max(1, -(-cell_len(line.expandtabs()) // width)) for line in text.split("\n"))
