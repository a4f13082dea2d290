"""Every stage declares the code it runs: dvc.yaml lists its import closure, so a code change reaches DVC."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from madseg.config import load_params
from madseg.stage_code import (
    TRUTH_DEP,
    TRUTH_READERS,
    PipelineOutOfDate,
    check_declared,
    closure,
    command_stage,
    stage_code,
    sync_dvc_yaml,
)

ROOT = Path(__file__).resolve().parents[1]


def _dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_dvc_yaml_lists_each_stages_import_closure_and_the_data_params_name():
    assert sync_dvc_yaml(ROOT, load_params(ROOT / "params.yaml"), check=True) == []
    for name, stage in _dvc_stages().items():
        body = stage.get("do", stage)
        module = command_stage(body["cmd"])
        assert module is not None, f"{name}: not a `madseg run` stage"
        assert [d for d in body["deps"] if d.startswith("src/")] == stage_code(module)


def test_data_that_params_name_is_declared_or_the_stage_refuses_to_run(tmp_path):
    shutil.copy2(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    params = load_params(ROOT / "params.yaml")
    more = dataclasses.replace(params.crawl, folders=(*params.crawl.folders, "data/more"), url_list="urls.txt")
    moved = dataclasses.replace(params, crawl=more)
    with pytest.raises(PipelineOutOfDate, match=r"\['data/more', 'urls.txt'\] as dependencies of crawl_index"):
        check_declared("crawl_index", moved, tmp_path)
    labelstudio = dataclasses.replace(moved, annotation=dataclasses.replace(params.annotation, backend="labelstudio"))
    assert set(sync_dvc_yaml(tmp_path, labelstudio)) == {"crawl_index", *TRUTH_READERS}
    check_declared("crawl_index", labelstudio, tmp_path)
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    assert {"data/more", "urls.txt"} <= set(stages["crawl_index"]["deps"])
    assert TRUTH_DEP not in stages["import_scores"]["do"]["deps"]  # a Label Studio campaign has no truth
    assert sync_dvc_yaml(tmp_path, labelstudio, check=True) == []


def test_the_photo_worlds_sources_are_a_dependency_of_make_world(tmp_path):
    shutil.copy2(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    params = load_params(ROOT / "params.yaml")
    photos = dataclasses.replace(params, world=dataclasses.replace(params.world, kind="photos"))
    with pytest.raises(PipelineOutOfDate, match=r"data/photo_sources"):
        check_declared("make_world", photos, tmp_path)
    assert sync_dvc_yaml(tmp_path, photos) == ["make_world"]
    check_declared("make_world", photos, tmp_path)
    assert "data/photo_sources" in yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]["make_world"]["deps"]
    assert sync_dvc_yaml(tmp_path, params) == ["make_world"]  # back to the shapes: the folder leaves again
    assert (tmp_path / "dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text()


def test_the_closure_follows_lazy_relative_and_package_imports():
    files = {p.relative_to(ROOT / "src").as_posix() for p in closure(["madseg.stages.import_scores"])}
    assert "madseg/annotation/simulated.py" in files  # via annotation.backend's relative import
    assert "madseg/annotation/__init__.py" in files and "madseg/__init__.py" in files
    assert "madseg/stages/select_S.py" not in files

    # a planted known answer: which stages run the simulated annotators, the store, select_S's module
    def runs(file):
        return {
            s
            for s in ("import_scores", "import_masks", "mine", "pretrain", "select_S", "finetune")
            if file in stage_code(s)
        }

    assert {"import_scores", "import_masks"} <= runs("src/madseg/annotation/simulated.py")
    assert runs("src/madseg/annotation/simulated.py").isdisjoint({"mine", "pretrain", "finetune", "select_S"})
    assert {"mine", "pretrain", "finetune"} <= runs("src/madseg/io/store.py")
    assert runs("src/madseg/stages/select_S.py") == {"select_S"}
    # the command line's subcommand imports (import-model, the demo runner) are not every stage's code
    assert "src/madseg/models/importing.py" not in stage_code("mine")
    assert "src/madseg/demo.py" not in stage_code("mine")


@pytest.mark.slow
def test_editing_a_library_file_makes_exactly_its_stages_stale(tiny_project, tmp_path):
    from tests.project import run

    copy = tmp_path / "copy"
    shutil.copytree(tiny_project, copy, symlinks=True)
    assert run(["dvc", "status", "--json"], copy).stdout.strip() in ("{}", "")
    with (copy / "src/madseg/annotation/simulated.py").open("a") as f:
        f.write("# an edit\n")
    stale = set(yaml.safe_load(run(["dvc", "status", "--json"], copy).stdout))
    rounds = yaml.safe_load((copy / "params.yaml").read_text())["rounds"]
    expected = {
        f"{s}@{r}" for s in ("export_weak_tasks", "import_scores", "export_pixel_tasks", "import_masks") for r in rounds
    }
    expected.add("validity")  # it fits the rater model to the simulated annotators, by their names
    assert stale == expected
