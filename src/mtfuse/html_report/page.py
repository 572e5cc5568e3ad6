"""HTML building blocks of the report: escaped text, tables, figures, sections and the page around them.

The page is self-contained: CSS inline, figures inline SVG, and a Content-Security-Policy that lets the page
load nothing from anywhere (an attempt is recorded, not just blocked). A small inline script records, for
browser tests and for anyone looking, how many figures rendered (``data-figures``: SVGs with a non-empty
bounding box, of ``data-svgs``) and any script error or blocked load (``data-errors``, a JSON list) on
``<body>``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

Colour = tuple[float, float, float]


@dataclass(frozen=True)
class Note:
    """A one-line reason why something is not shown (rendered in grey; the CLI prints them too)."""

    text: str


Part = str | Note  # a piece of a section: HTML markup, or a note

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; }
th { background: #f2f2f2; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: .9em; height: .9em; margin-right: .4em; vertical-align: -0.1em;
          border: 1px solid #666; }
figure.plot { margin: 1em 0; overflow-x: auto; }
figure.plot svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #444; margin-top: .3em; }
p.note { color: #666; font-style: italic; }
nav ul { columns: 2; }
code { background: #f4f4f4; padding: 0 .2em; }
"""

# Records errors and blocked loads from the first moment, counts the rendered figures once laid out.
SCRIPT = """
(function () {
  var errors = [];
  function put() { if (document.body) document.body.dataset.errors = JSON.stringify(errors); }
  window.onerror = function (msg, src, line) { errors.push(String(msg) + " (line " + line + ")"); put(); };
  document.addEventListener("securitypolicyviolation", function (e) {
    errors.push("blocked load: " + e.blockedURI); put();
  });
  window.addEventListener("load", function () {
    var svgs = document.querySelectorAll("figure.plot svg"), shown = 0;
    for (var i = 0; i < svgs.length; i++) {
      var box = svgs[i].getBBox();
      if (box.width > 0 && box.height > 0) shown++;
    }
    document.body.dataset.svgs = svgs.length;
    document.body.dataset.figures = shown;
    put();
  });
})();
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _is_number(cell: str) -> bool:
    head = cell.split(" ")[0].rstrip("Mk%")
    return head == "–" or head.replace(".", "", 1).lstrip("-+").isdigit()


def swatch(colour: Colour) -> str:
    r, g, b = (round(255 * c) for c in colour)
    return f'<span class="swatch" style="background: rgb({r}, {g}, {b})"></span>'


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], colours: Sequence[Colour] | None = None
) -> str:
    """A table of text cells (escaped); numbers right-aligned; ``colours``: a swatch before each row's first
    cell (the system's colour in the figures)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            mark = swatch(colours[i]) if colours is not None and j == 0 else ""
            cls = ' class="num"' if j > 0 and _is_number(cell) else ""
            cells.append(f"<td{cls}>{mark}{esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(svg: str, caption: str) -> str:
    """An inline SVG (from ``mtfuse.figures.to_svg``: already valid markup) with its caption."""
    return f'<figure class="plot">{svg}<figcaption>{esc(caption)}</figcaption></figure>'


def para(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def heading(level: int, text: str) -> str:
    return f"<h{level}>{esc(text)}</h{level}>"


def render(part: Part) -> str:
    return f'<p class="note">{esc(part.text)}</p>' if isinstance(part, Note) else part


def section(anchor: str, title: str, body: Sequence[Part]) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{"".join(map(render, body))}</section>'


def page(title: str, intro: Sequence[str], sections: Sequence[tuple[str, str, Sequence[Part]]]) -> str:
    """The whole document: ``sections`` are ``(anchor, title, body parts)``, listed in a table of contents."""
    toc = "".join(f'<li><a href="#{esc(a)}">{esc(t)}</a></li>' for a, t, _ in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style><script>{SCRIPT}</script></head>\n"
        f"<body><h1>{esc(title)}</h1>{''.join(intro)}<nav><ul>{toc}</ul></nav>\n"
        + "\n".join(section(a, t, body) for a, t, body in sections)
        + "\n</body></html>\n"
    )
