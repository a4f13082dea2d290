"""HTML pages of the report: pure functions from gathered figures and tables to page text."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table.t1{border-collapse:collapse;margin:8px 0} \
table.t1 td,table.t1 th{padding:4px 10px;border:1px solid #ddd;
text-align:right} table.t1 td:first-child,table.t1 th:first-child{text-align:left}
tr.target{background:#fff4d6;font-weight:bold} .up{color:#1a7f37} .down{color:#c62828}
.charts{display:flex;flex-wrap:wrap;gap:16px} .gallery{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:260px;font-size:12px} \
figure img{width:100%;image-rendering:pixelated;border:1px solid #ccc}
nav a{margin-right:12px} .prov{font-family:monospace;font-size:12px;background:#f6f6f6;padding:8px}
.empty{color:#888;font-style:italic} .note{color:#555;font-size:13px}
.summary{font-size:16px;line-height:1.5;background:#f3f7ff;padding:10px 14px;border-left:4px solid #2b6cb0}
"""


@dataclass
class GalleryItem:
    image: str  # path relative to the page
    caption: str


@dataclass
class Section:
    title: str
    anchor: str
    body: str = ""
    gallery: list[GalleryItem] = field(default_factory=list)
    note: str = ""


def table1_html(table: pd.DataFrame, target: str) -> str:
    """Table 1 with the target's row highlighted and each T-column coloured by its change since the last
    round."""
    cols = list(table.columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for _, row in table.iterrows():
        cells = [f"<td>{html.escape(str(row['model']))}</td>"]
        previous_t = None
        for c in cols[1:]:
            value = row[c]
            cls = ""
            if c.split()[-1] != "T0":  # a T^(i+1) column: colour the change from the previous round's T column
                if previous_t is not None and value == value and previous_t == previous_t:
                    cls = ' class="up"' if value > previous_t else ' class="down"' if value < previous_t else ""
                previous_t = value
            text = "–" if value != value else f"{100 * value:.1f}"
            cells.append(f"<td{cls}>{text}</td>")
        klass = ' class="target"' if row["model"] == target else ""
        rows.append(f"<tr{klass}>{''.join(cells)}</tr>")
    return f'<table class="t1"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def gallery_html(items: Sequence[GalleryItem]) -> str:
    if not items:
        return '<p class="empty">nothing to show yet</p>'
    figures = [
        f'<figure><a href="{html.escape(i.image)}">'
        f'<img src="{html.escape(i.image)}" alt="{html.escape(i.caption)}">'
        f"</a><figcaption>{html.escape(i.caption)}</figcaption></figure>"
        for i in items
    ]
    return f'<div class="gallery">{"".join(figures)}</div>'


def page(title: str, sections: Sequence[Section], nav: Mapping[str, str], provenance: Mapping[str, str]) -> str:
    """A whole self-contained page: inline CSS, SVG and script, images by relative path, no network."""
    links = "".join(f'<a href="{html.escape(href)}">{html.escape(name)}</a>' for name, href in nav.items())
    toc = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    body = []
    for s in sections:
        body.append(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>')
        if s.note:
            body.append(f'<p class="note">{html.escape(s.note)}</p>')
        body.append(s.body)
        if s.gallery:
            body.append(gallery_html(s.gallery))
        body.append("</section>")
    prov = "<br>".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in provenance.items())
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<nav>{links}</nav><h1>{html.escape(title)}</h1><nav>{toc}</nav>{''.join(body)}"
        f'<section id="provenance"><h2>Provenance</h2><div class="prov">{prov}</div></section>'
        "</body></html>\n"
    )
