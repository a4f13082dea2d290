"""Report sections built from gathered figures (pure): mIoU across rounds, the science of the method, and each
round's summary in words."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from madseg.rater_model import estimate
from madseg.report.charts import line_chart


def round_curves_html(rounds: Mapping[str, Mapping[str, float]], models: list[str], target: str) -> str:
    """Two line charts, mIoU on T0 and on each round's T, one series per model (the target highlighted)."""
    charts = []
    for column, label in (("T0", "T0 (benchmark)"), ("T", "T^(i+1) (MAD test set)")):
        series = {
            m: [(int(k), r.get(f"{m}.{column}.miou", float("nan"))) for k, r in sorted(rounds.items())] for m in models
        }
        charts.append(line_chart(series, title=f"mIoU on {label}", x_label="round", y_label="mIoU", highlight=target))
    return f'<div class="charts">{"".join(charts)}</div>'


def finetune_loss_html(curve: pd.DataFrame) -> str:
    """The fine-tune's loss per epoch, one series per learning-rate candidate of the grid (column
    candidate_lr; curves written before it existed name the candidate lr)."""
    column = "candidate_lr" if "candidate_lr" in curve else "lr"
    series = {f"lr {lr:g}": list(zip(g["epoch"], g["loss"], strict=True)) for lr, g in curve.groupby(column)}
    return line_chart(series, title="Fine-tuning loss", x_label="epoch", y_label="loss")


def science_html(stability: pd.DataFrame | None, study: Mapping, validity: Mapping) -> str:
    """The ranking-stability chart (Appendix C; columns round, k, srcc), the validity study's table and the
    hidden-truth checks (metrics/validity.json) as a table of readable numbers."""
    parts = []
    if stability is not None:
        series = {f"round {r}": list(zip(g["k"], g["srcc"], strict=True)) for r, g in stability.groupby("round")}
        parts.append(
            line_chart(
                series,
                title="Ranking stability (Appendix C)",
                x_label="k (first k images of T)",
                y_label="SRCC with all of T",
                y_range=(-1, 1),
            )
        )
    if "seeds" in study:
        parts.append(study_table_html(study))
    if validity:
        rows = "".join(f"<tr><td>{k}</td><td>{readable(v)}</td></tr>" for k, v in sorted(validity.items()))
        parts.append(
            f'<table class="t1"><caption>Hidden-truth checks (metrics/validity.json)</caption>'
            f"<tbody>{rows}</tbody></table>"
        )
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
        cells = [
            strategy,
            f"{study[f'd_eval_miou.{strategy}']:.1f}",
            "" if margin is None else f"{margin:+.2f}" + ("" if sd is None else f" ± {sd:.2f}"),
            "" if duel is None else f"{duel:+.1f}",
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "strategy",
            "D_eval mIoU (final target)",
            "MAD's margin (points, ± sd)",
            "MAD competition: MAD − it (points)",
        )
    )
    caption = f"Validity study over seeds {study['seeds']} (scripts/validity_study.py)"
    return (
        f'<table class="t1"><caption>{caption}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


@dataclass(frozen=True)
class RoundFacts:
    """What a round found, cost and changed, in the figures a manager asks for."""

    round: str
    proposed: int  # |M|
    competitors: int
    ratings: int  # rating answers collected on M
    poor: int  # images of M rated at most 2 (poor or worse) on average
    worst_class: str | None  # the class whose images were most often rated poor
    labelled: int  # images given pixel labels (S and T)
    regions: int | None  # regions of one class those labels drew, and their share of object pixels (None: unknown)
    object_share: float | None
    target_t: float | None  # the target's mIoU on this round's test set T
    best_competitor_t: tuple[str, float] | None
    t0_before: float | None  # the target's T0 mIoU before and after this round's fine-tune (None: no fine-tune)
    t0_after: float | None


def manager_summary_html(f: RoundFacts) -> str:
    """Three sentences: what was found, what it cost in labels, what changed."""
    share = f" ({100 * f.poor / f.proposed:.0f} %)" if f.proposed else ""
    found = (
        f"The target and its {f.competitors} competitors disagreed most on {f.proposed} pool images; raters "
        f"judged the target's prediction poor or worse on {f.poor} of them{share}"
        + (f", most often on {f.worst_class}." if f.worst_class else ".")
    )
    drawn = ""
    if f.regions is not None and f.object_share is not None:
        drawn = f" ({f.regions} regions drawn, {100 * f.object_share:.0f} % of their pixels on objects)"
    cost = f"That took {f.ratings} quick ratings and pixel labels for {f.labelled} images{drawn}."
    if f.target_t is not None and f.best_competitor_t is not None:
        name, score = f.best_competitor_t
        standing = (
            f"On this round's test set the target scores {100 * f.target_t:.1f} mIoU, the best competitor "
            f"({name}) {100 * score:.1f}"
        )
    else:
        standing = "This round's test set is not scored yet"
    if f.t0_before is not None and f.t0_after is not None:
        changed = (
            f"{standing}; fine-tuning on the worst-rated images moved the target's benchmark (T0) mIoU "
            f"from {100 * f.t0_before:.1f} to {100 * f.t0_after:.1f}."
        )
    else:
        changed = f"{standing}; this round measures only (no fine-tune follows it)."
    return f'<p class="summary">{html.escape(found)} {html.escape(cost)} {html.escape(changed)}</p>'


def rater_stats(scores: pd.DataFrame) -> pd.DataFrame:
    """Each rater's bias and inconsistency (the rater model of :mod:`madseg.rater_model`) and their
    agreement with the others.

    Args:
        scores: one row per rating: image_id, annotator, score (1..5; NaN for an out-of-domain veto).
    Returns:
        one row per annotator: ratings, mean_score, bias (points of the 1-5 scale; > 0 rates more leniently
        than the raters' average), inconsistency (the spread of their scores around quality + bias), agreement
        (Pearson r of their scores with the other raters' mean on the same images; NaN where undefined).
    """
    s = scores.dropna(subset=["score"])[["image_id", "annotator", "score"]].astype({"score": float})
    columns = ["annotator", "ratings", "mean_score", "bias", "inconsistency", "agreement"]
    if s.empty:
        return pd.DataFrame(columns=columns)
    model = estimate(s)
    per_image = s.groupby("image_id")["score"].agg(["sum", "count"])
    s = s.join(per_image, on="image_id")
    shared = s[s["count"] > 1].assign(others=lambda d: (d["sum"] - d["score"]) / (d["count"] - 1))
    rows = []
    for name, g in s.groupby("annotator", sort=True):
        o = shared[shared["annotator"] == name]
        both_vary = len(o) > 1 and o["score"].std() > 0 and o["others"].std() > 0
        rows.append(
            {
                "annotator": name,
                "ratings": len(g),
                "mean_score": g["score"].mean(),
                "bias": model.bias[str(name)],
                "inconsistency": model.inconsistency[str(name)],
                "agreement": o["score"].corr(o["others"]) if both_vary else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def rater_table_html(stats: pd.DataFrame) -> str:
    """The raters' table: ratings, mean score, bias and inconsistency (points of the 1-5 scale), agreement."""
    if stats.empty:
        return '<p class="empty">no rating yet</p>'
    rows = "".join(
        f"<tr><td>{html.escape(str(r.annotator))}</td><td>{r.ratings}</td><td>{readable(r.mean_score)}</td>"
        f"<td>{r.bias:+.2f}</td><td>{r.inconsistency:.2f}</td><td>{readable(r.agreement)}</td></tr>"
        for r in stats.itertuples(index=False)
    )
    columns = ("rater", "ratings", "mean score", "bias", "inconsistency", "agreement with the others (r)")
    head = "".join(f"<th>{h}</th>" for h in columns)
    note = (
        '<p class="note">Bias and inconsistency in points of the 1-5 scale, from the rater model '
        "(each score = the image's quality + the rater's bias + noise of the rater's spread).</p>"
    )
    return f'<table class="t1"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{note}'


def scores_table_html(metrics: Mapping[str, float], models: Sequence[str]) -> str:
    """One round's scores per model (rows in ``models``' order): mIoU on T0 and T, T's bootstrap 95 % interval
    and T's per-image mIoU, in points (nan where the round's metrics lack one)."""
    rows = "".join(
        f"<tr><td>{m}</td><td>{100 * metrics.get(f'{m}.T0.miou', float('nan')):.1f}</td>"
        f"<td>{100 * metrics.get(f'{m}.T.miou', float('nan')):.1f}</td>"
        f"<td>[{100 * metrics.get(f'{m}.T.miou_ci_low', float('nan')):.1f}, "
        f"{100 * metrics.get(f'{m}.T.miou_ci_high', float('nan')):.1f}]</td>"
        f"<td>{100 * metrics.get(f'{m}.T.image_miou', float('nan')):.1f}</td></tr>"
        for m in models
    )
    return (
        '<table class="t1"><thead><tr><th>model</th><th>T0</th><th>T</th><th>T 95 % CI</th>'
        f"<th>T per-image</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def agreement_html(alpha: float | None) -> str:
    """The raters' agreement (Krippendorff's ordinal alpha; None where undefined) in a sentence."""
    shown = alpha if alpha is None else f"{alpha:.3f}"
    return f"<p>Annotator agreement (Krippendorff's α, ordinal): <b>{shown}</b></p>"


def most_changed(
    stats_before: pd.DataFrame, stats_after: pd.DataFrame, *, exclude: Iterable[str] = (), n: int = 12
) -> list[str]:
    """The ``n`` images whose predicted class areas a fine-tune changed most (sum of absolute changes of the
    area_<class> fractions; ties in the before table's order), none of ``exclude``.

    Args:
        stats_before, stats_after: PredictionStore.stats() of the two targets (id, area_<class>..., ...).
    """
    before, after = stats_before.set_index("id"), stats_after.set_index("id")
    area_cols = [c for c in before.columns if c.startswith("area_")]
    change = (before[area_cols] - after[area_cols]).abs().sum(axis=1)
    change = change.drop(labels=list(exclude), errors="ignore")
    return change.sort_values(ascending=False, kind="stable").index[:n].tolist()
