"""Report sections built from gathered figures (pure): mIoU across rounds, and the science of the method."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from madseg.report.charts import line_chart


def round_curves_html(rounds: Mapping[str, Mapping[str, float]], models: list[str], target: str) -> str:
    """Two line charts, mIoU on T0 and on each round's T, one series per model (the target highlighted)."""
    charts = []
    for column, label in (("T0", "T0 (benchmark)"), ("T", "T^(i+1) (MAD test set)")):
        series = {
            m: [(int(k), r.get(f"{m}.{column}.miou", float("nan"))) for k, r in sorted(rounds.items())]
            for m in models
        }
        charts.append(
            line_chart(series, title=f"mIoU on {label}", x_label="round", y_label="mIoU", highlight=target)
        )
    return f'<div class="charts">{"".join(charts)}</div>'


def finetune_loss_html(curve: pd.DataFrame) -> str:
    """The fine-tune's loss per epoch, one series per learning-rate candidate of the grid (column candidate_lr;
    curves written before it existed name the candidate lr)."""
    column = "candidate_lr" if "candidate_lr" in curve else "lr"
    series = {f"lr {lr:g}": list(zip(g["epoch"], g["loss"], strict=True)) for lr, g in curve.groupby(column)}
    return line_chart(series, title="Fine-tuning loss", x_label="epoch", y_label="loss")


def science_html(stability: pd.DataFrame | None, study: Mapping, validity: Mapping) -> str:
    """The ranking-stability chart (Appendix C; columns round, k, srcc), the validity study's table and the
    hidden-truth checks (metrics/validity.json) as a table of readable numbers."""
    parts = []
    if stability is not None:
        series = {
            f"round {r}": list(zip(g["k"], g["srcc"], strict=True)) for r, g in stability.groupby("round")
        }
        parts.append(line_chart(series, title="Ranking stability (Appendix C)", x_label="k (first k images of T)",
                                y_label="SRCC with all of T", y_range=(-1, 1)))  # fmt: skip
    if "seeds" in study:
        parts.append(study_table_html(study))
    if validity:
        rows = "".join(f"<tr><td>{k}</td><td>{readable(v)}</td></tr>" for k, v in sorted(validity.items()))
        parts.append(f'<table class="t1"><caption>Hidden-truth checks (metrics/validity.json)</caption>'
                     f"<tbody>{rows}</tbody></table>")  # fmt: skip
    return "".join(parts) or '<p class="empty">no study results yet (see README: the validity study)</p>'


def readable(value) -> str:
    """A metric for people: at most 3 decimals, none for whole numbers, and — for a missing value."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "—"
    return str(value)


def study_table_html(study: Mapping) -> str:
    """Appendix A at equal labelling budget: each strategy's final target on D_eval, and MAD's margins."""
    rows = []
    for strategy in ("mad", "entropy", "random"):
        if f"d_eval_miou.{strategy}" not in study:
            continue
        margin = study.get(f"mad_minus_{strategy}")
        sd = study.get(f"mad_minus_{strategy}_sd")
        duel = study.get(f"competition.mad_minus_{strategy}")
        cells = [strategy, f"{study[f'd_eval_miou.{strategy}']:.1f}",
                 "" if margin is None else f"{margin:+.2f}" + ("" if sd is None else f" ± {sd:.2f}"),
                 "" if duel is None else f"{duel:+.1f}"]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("strategy", "D_eval mIoU (final target)", "MAD's margin (points, ± sd)",
                                              "MAD competition: MAD − it (points)"))  # fmt: skip
    caption = f"Validity study over seeds {study['seeds']} (scripts/validity_study.py)"
    return f'<table class="t1"><caption>{caption}</caption><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
