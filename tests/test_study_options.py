"""The validity study's recipes: each names the params it documents, and the per-recipe summary plants known
answers."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from madseg.config import load_params

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("validity_study", ROOT / "scripts" / "validity_study.py")
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def test_recipes_produce_the_documented_params():
    assert study.option_params("paper") == []
    assert study.option_params("rater_model") == ["selection.scores=rater_model"]
    assert study.option_params("views+rater_model") == [
        "mining.self_consistency=[contrast_stretch]",
        "mining.n3=12",
        "selection.scores=rater_model",
    ]
    args = study.experiment_args("mad", 1, 0.01, 2, "views+rater_model")
    assert args[args.index("-n") + 1] == "study-views+rater_model-mad-s1" and "selection.scores=rater_model" in args
    assert study.experiment_name("entropy", 2) == "study-entropy-s2"  # the paper's recipe keeps its old names
    with pytest.raises(SystemExit, match="unknown option"):
        study.option_params("views+nope")
    # the defaults are the study's winner; the paper's recipe is the one param `selection.scores: mean` away
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["selection"]["scores"] == "rater_model" and params["selection"]["method"] == "lowest"
    assert params["mining"]["self_consistency"] == [] and params["finetune"]["augment"] is None


@pytest.mark.parametrize("option", sorted(study.OPTIONS))
def test_every_option_sets_keys_the_params_know_to_valid_values(tmp_path, option):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for setting in study.option_params(option):
        dotted, value = setting.lstrip("+").split("=", 1)
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node[key]
        assert leaf in node or setting.startswith("+"), f"{setting}: params.yaml lacks the key; add it with ++"
        node[leaf] = yaml.safe_load(value)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    load_params(tmp_path / "params.yaml")


def test_recipe_summary_means_spread_and_margins():
    def row(option, strategy, seed, corner, final, low_before, low_after):
        return {
            "option": option,
            "strategy": strategy,
            "seed": seed,
            "corner_miou_gain": corner,
            "t0_drop": 0.1,
            "target_2.all_in_domain": final,
            "target_0.factor.low_contrast": low_before,
            "target_2.factor.low_contrast": low_after,
            "S.object_pixels": 1000 * seed + (500 if strategy == "entropy" else 300),
            "m_over_random_miou": 0.6 + seed / 50 if strategy == "mad" else 0.7,
        }

    table = pd.DataFrame(
        [
            row("paper", "mad", 0, 6.0, 0.78, 0.10, 0.10),
            row("paper", "mad", 1, 8.0, 0.80, 0.10, 0.12),
            row("views", "mad", 0, 5.0, 0.79, 0.10, 0.30),
            row("views", "entropy", 0, 4.0, 0.77, 0.10, 0.10),
            row("objects_budget", "entropy", 1, 4.0, 0.76, 0.10, 0.10),  # an option run for a baseline alone
        ]
    )
    summary = study.summarize_options(table, "2")
    assert summary["paper.corner_miou_gain"] == 7.0 and summary["paper.corner_miou_gain_sd"] == pytest.approx(1.41)
    assert summary["paper.gain.low_contrast_by_seed"] == [0.0, 2.0] and summary["paper.seeds"] == [0, 1]
    assert summary["views.gain.low_contrast"] == 20.0 and summary["views.corner_miou_gain_sd"] is None
    assert summary["views.mad_minus_entropy"] == 2.0 and "paper.mad_minus_entropy" not in summary
    assert summary["views.entropy.d_eval_miou"] == 77.0 and summary["views.seeds"] == [0]
    assert summary["objects_budget.entropy.d_eval_miou"] == 76.0 and summary["objects_budget.seeds"] == [1]
    assert summary["paper.S.object_pixels_by_seed"] == [300, 1300] and summary["views.entropy.S.object_pixels"] == 500
    assert not any(k.startswith("objects_budget.") and "entropy" not in k and "seeds" not in k for k in summary)
    assert summary["paper.m_over_random_miou"] == 0.61 and summary["paper.m_over_random_miou_by_seed"] == [0.6, 0.62]


def test_validity_folds_in_the_studys_margins_and_the_gains_of_fine_tuning():
    from madseg.validity import STUDY_KEYS, round_gains, study_margins

    margins = study_margins(
        {"mad_minus_entropy": 0.7, "mad.corner_miou_gain": 7.2},
        {"views.seeds": [0, 1], "views.t0_drop": 0.4, "views.t0_drop_sd": 0.1, "mean.d_eval_miou": 0.8},
    )
    assert margins["paper.mad_minus_entropy"] == 0.7 and margins["paper.corner_miou_gain"] == 7.2
    assert margins["options.views.t0_drop"] == 0.4 and margins["options.views.t0_drop_sd"] == 0.1
    assert margins["options.views.corner_miou_gain"] is None  # not run: None, never a guess
    assert not any(k.startswith("options.mean.") for k in margins)  # an option without seeds did not run
    assert set(STUDY_KEYS) <= set(margins) and study_margins({}, {})["seeds"] is None
    scores = {
        "target_0.corner": 0.40,
        "target_2.corner": 0.47,
        "target_0.normal": 0.9,
        "target_2.normal": 0.91,
        "target_0.T0": 0.80,
        "target_2.T0": 0.79,
        "target_0.factor.blur": 0.3,
        "target_2.factor.blur": 0.5,
    }
    gains = round_gains(scores, "0", "2")
    assert gains == pytest.approx(
        {"corner_miou_gain": 7.0, "normal_miou_change": 1.0, "t0_drop": 1.0, "gain.blur": 20.0}
    )


def test_precision_ratios_compare_m_and_entropy_with_random_and_say_none_where_unmeasured():
    from madseg.validity import precision_ratios

    precision = {
        "mad": 0.6,
        "random": 0.3,
        "mad.mean_image_miou": 0.25,
        "entropy.mean_image_miou": 0.4,
        "random.mean_image_miou": 0.5,
        "random.wrong_share": 0.3,
    }
    assert precision_ratios(precision) == {
        "precision_ratio_vs_random": 2.0,
        "m_over_random_miou": 0.5,
        "entropy_over_random_miou": 0.8,
        "target_wrong_share": 0.3,
    }
    nothing = precision_ratios({"mad": 0.6, "random": 0.0})
    assert set(nothing.values()) == {None}


def test_resume_takes_a_row_for_done_only_where_its_final_target_is_kept(tmp_path, monkeypatch):
    """A clone of the demo carries the demo's committed study CSVs; in a project of another world, --resume must
    rerun those experiments, not report the demo's figures as its own. Nor a row whose recorded target is not the
    one kept under its name."""
    monkeypatch.setattr(study, "ROOT", tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / study.STUDY).mkdir(parents=True)
    rows = [{"option": "views", "strategy": "mad", "seed": seed, "corner_miou_gain": 1.0} for seed in (0, 1, 2)]
    rows[1]["target_md5"] = hashlib.md5(b"a target this project trained").hexdigest()
    rows[2]["target_md5"] = hashlib.md5(b"the target it measured").hexdigest()
    pd.DataFrame(rows).to_csv(tmp_path / "metrics" / "study_options.csv", index=False)
    (tmp_path / "metrics" / "study.json").write_text('{"fixed_lr": null}')
    pd.DataFrame([{"strategy": "mad", "seed": 0}]).to_csv(tmp_path / "metrics" / "study.csv", index=False)
    study.target_file("views", "mad", 1).write_bytes(b"a target this project trained")
    study.target_file("views", "mad", 2).write_bytes(b"a later run's target of the same name")
    study.target_file("paper", "mad", 0).write_bytes(b"another")
    assert study.target_file("paper", "mad", 0).name == "mad-s0.pt"  # the paper's recipe keeps its old names
    asked = []

    def run_experiments(todo, *args, **kwargs):
        asked.extend(todo)
        return iter(())

    monkeypatch.setattr(study, "run_experiments", run_experiments)
    monkeypatch.setattr(study, "summarize_options", lambda table, final_round: {"rows": len(table)})
    options = ["paper", "views"]
    study.study_options(
        argparse.Namespace(resume=True, options=options, strategies=["mad"], seeds=[0, 1, 2], lr=None, jobs=1), "2"
    )
    assert asked == [("views", "mad", 0), ("paper", "mad", 1), ("paper", "mad", 2), ("views", "mad", 2)]


def test_resume_collects_only_an_experiment_that_ran_with_its_options_current_params(monkeypatch):
    """An option's params may change between runs (the committee's n3 did): an experiment of the same name that
    ran under the old ones is run again, not collected."""
    ran = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key in ("mining", "selection", "finetune"):
        ran[key]["seed"] = 1
    ran["annotation"]["simulated"]["seed"] = 1
    ran["mining"] |= {"strategy": "mad", "rank_by": "committee", "n3": 36}
    ran["finetune"]["workers"] = 1  # another worker count trains the same weights
    monkeypatch.setattr(study, "git", lambda *args: yaml.safe_dump(ran))
    now = study.experiment_args("mad", 1, None, 2, "committee")
    assert not study.ran_with("refs/exps/x", now)  # ran at n3 36, the option now says 30
    ran["mining"]["n3"] = 30
    assert study.ran_with("refs/exps/x", now)
    assert not study.ran_with("refs/exps/x", study.experiment_args("mad", 2, None, 2, "committee"))  # another seed


def test_each_experiments_labels_are_costed_from_the_pools_truth(tmp_path, monkeypatch):
    from madseg.io.images import write_mask

    monkeypatch.setattr(study, "ROOT", tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    params = load_params(tmp_path / "params.yaml")
    classes = params.dataset.class_list()
    truth = tmp_path / params.annotation.simulated.truth_dir / "masks"
    truth.mkdir(parents=True)
    a = np.zeros((8, 8), dtype=np.uint8)
    a[:2, :2] = a[5:, 5:] = 1  # two regions of one class: 4 + 9 object pixels
    b = np.zeros((8, 8), dtype=np.uint8)
    b[3:5, :] = 2  # one region: 16 object pixels
    write_mask(truth / "a.png", a, classes)
    write_mask(truth / "b.png", b, classes)
    (tmp_path / study.STUDY).mkdir(parents=True)
    pd.DataFrame({"image_id": ["a", "b"], "round": [0, 1]}).to_csv(study.labelled_file("views", "mad", 0), index=False)
    cost = {"S.images": 2, "S.regions": 3, "S.object_pixels": 29, "S.object_share": 29 / 128}
    assert study.labelling_cost("views", "mad", 0) == cost
    assert study.labelling_cost("views", "mad", 1) == {}  # its S is not kept
    old_row = {"option": "views", "strategy": "mad", "seed": 0, "corner_miou_gain": 1.0}  # from before the cost
    assert study.with_cost(old_row) == old_row | cost


def test_study_summary_gives_margins_by_seed_and_each_strategys_labelling_cost():
    runs = [("mad", 0, 0.80, 100), ("mad", 1, 0.79, 120), ("entropy", 0, 0.78, 300), ("entropy", 1, 0.80, 310)]
    same = {"target_2.corner": 0.5, "corner_miou_gain": 7.0, "t0_drop": 0.1, "precision_ratio_vs_random": 1.2}
    rows = [
        {"strategy": s, "seed": seed, "target_2.all_in_domain": miou, "S.object_pixels": px, **same}
        for s, seed, miou, px in runs
    ]
    summary = study.summarize(pd.DataFrame(rows), {}, [0, 1], "2")
    assert summary["mad_minus_entropy_by_seed"] == pytest.approx([2.0, -1.0])
    assert summary["mad_beats_entropy_in_seeds"] == 1
    assert summary["S.object_pixels.mad"] == 110 and summary["S.object_pixels.entropy"] == 305
