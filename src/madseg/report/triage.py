"""The triage gallery: every image of every round's M as a card people filter and sort (by round, class,
competitor, direction, slice and MOS) in one self-contained page; a click shows the overlay large.

Pure: cards in, HTML out. The filtering runs in a few lines of inline script over the cards' data attributes,
so the page works from a file, offline.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

STYLE = """
.triage .controls{display:flex;flex-wrap:wrap;gap:12px;align-items:end;margin:8px 0;font-size:13px}
.triage label{display:flex;flex-direction:column;gap:2px} .triage .count{font-weight:bold}
.triage .cards{display:flex;flex-wrap:wrap;gap:10px} .triage figure{width:200px;cursor:zoom-in}
.triage figure[hidden]{display:none} dialog.large{max-width:95vw;padding:8px} dialog.large img{
width:min(90vw,1100px);image-rendering:pixelated} dialog.large p{margin:4px 0;font-size:13px}
"""

SCRIPT = """
(() => {
  const root = document.querySelector('.triage'), cards = [...root.querySelectorAll('figure')];
  const get = id => root.querySelector('#' + id);
  function apply() {
    const f = {round: get('f-round').value, cls: get('f-class').value, competitor: get('f-competitor').value,
               direction: get('f-direction').value, slice: get('f-slice').value};
    const maxMos = parseFloat(get('f-mos').value);
    let shown = 0;
    for (const c of cards) {
      const d = c.dataset, mos = parseFloat(d.mos);
      const ok = (!f.round || d.round === f.round) && (!f.cls || d.cls === f.cls)
        && (!f.competitor || d.competitor === f.competitor) && (!f.direction || d.direction === f.direction)
        && (!f.slice || d.slices.split(' ').includes(f.slice))
        && (isNaN(maxMos) || (!isNaN(mos) && mos <= maxMos));
      c.hidden = !ok; shown += ok;
    }
    const key = get('f-sort').value, sign = key === 'distance' ? -1 : 1;
    const value = c => { const v = parseFloat(c.dataset[key]); return isNaN(v) ? Infinity : sign * v; };
    cards.sort((a, b) => value(a) - value(b) || a.dataset.id.localeCompare(b.dataset.id));
    const box = root.querySelector('.cards');
    for (const c of cards) box.appendChild(c);
    get('f-count').textContent = shown + ' of ' + cards.length + ' images';
  }
  root.querySelectorAll('select, input').forEach(e => e.addEventListener('input', apply));
  const dialog = document.querySelector('dialog.large');
  for (const c of cards) c.addEventListener('click', () => {
    dialog.querySelector('img').src = c.querySelector('img').src;
    dialog.querySelector('p').textContent = c.querySelector('figcaption').textContent;
    dialog.showModal();
  });
  dialog.addEventListener('click', () => dialog.close());
  apply();
})();
"""


DIRECTION_TITLES = {"t": "t (target's map)", "c": "c (competitor's map)"}


@dataclass(frozen=True)
class Card:
    """One image of one round's M."""

    image_id: str
    round: str
    image: str  # the overlay's path relative to the page
    cls: str  # the class of the first group that found it
    competitor: str
    direction: str
    distance: float
    mos: float | None  # None: not rated (or vetoed as out of domain)
    slices: tuple[int, ...] = field(default=())  # indices into the round's slice rules


def _options(name: str, label: str, values: Sequence[str], titles: Mapping[str, str] | None = None) -> str:
    titles = titles or {}
    opts = "".join(f'<option value="{html.escape(v)}">{html.escape(titles.get(v, v))}</option>' for v in values)
    return f'<label>{label}<select id="f-{name}"><option value="">all</option>{opts}</select></label>'


def triage_html(cards: Sequence[Card], slice_rules: Mapping[str, Sequence[str]]) -> str:
    """The gallery with its filters. ``slice_rules``: round -> its slices' plain-words rules (card.slices
    index into them); a slice filter value is ``<round>:<index>``."""
    if not cards:
        return '<p class="empty">no round has proposed images yet</p>'
    slice_titles = {
        f"{r}:{i}": f"round {r}: {rule}" for r, rules in slice_rules.items() for i, rule in enumerate(rules)
    }
    controls = (
        _options("round", "round", sorted({c.round for c in cards}, key=int))
        + _options("class", "class", sorted({c.cls for c in cards}))
        + _options("competitor", "competitor", sorted({c.competitor for c in cards}))
        + _options("direction", "direction", sorted({c.direction for c in cards}), DIRECTION_TITLES)
        + _options("slice", "failure slice", list(slice_titles), slice_titles)
        + '<label>MOS at most<input id="f-mos" type="number" min="1" max="5" step="0.5" '
        'placeholder="any"></label>'
        + '<label>sort by<select id="f-sort"><option value="mos">MOS, lowest first</option>'
        '<option value="distance">disagreement, highest first</option></select></label>'
        '<span class="count" id="f-count"></span>'
    )
    figures = []
    for c in cards:
        mos = "" if c.mos is None else f"{c.mos:.2f}"
        caption = (
            f"round {c.round} · {c.cls} · {c.competitor} · dir {c.direction} · d={c.distance:.2f} · MOS {mos or '–'}"
        )
        # the score in full for sorting and filtering (the rater model's is no multiple of 1/3), rounded for
        # eyes
        attrs = {
            "id": c.image_id,
            "round": c.round,
            "cls": c.cls,
            "competitor": c.competitor,
            "direction": c.direction,
            "distance": f"{c.distance:.6f}",
            "mos": "" if c.mos is None else repr(c.mos),
            "slices": " ".join(f"{c.round}:{i}" for i in c.slices),
        }
        data = " ".join(f'data-{k}="{html.escape(v)}"' for k, v in attrs.items())
        figures.append(
            f'<figure {data}><img loading="lazy" src="{html.escape(c.image)}" '
            f'alt="{html.escape(c.image_id)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return (
        f'<style>{STYLE}</style><div class="triage"><div class="controls">{controls}</div>'
        f'<div class="cards">{"".join(figures)}</div></div>'
        '<dialog class="large"><img alt="overlay"><p></p></dialog>'
        f"<script>{SCRIPT}</script>"
    )
