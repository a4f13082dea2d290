"""`madseg init`: turn a clone into a campaign on the user's data; `madseg check`: every param at once.

A campaign is this repository's layout on the user's data: ``params.yaml`` and ``dvc.yaml`` written here, the
labelled set and the pool under ``data/`` (copied and ``dvc add``ed, or kept in place as external
dependencies), an imported target under ``models/imported/``. Its ``dvc.yaml`` holds only the campaign's stages:
no demo world, and no ``validity`` unless the pool's truth is given (a dry run with simulated raters).

Both files come from the package's templates (``madseg/templates``): the demo's params and the whole pipeline, so
that ``madseg init --demo`` brings the demo back exactly as a fresh clone has it.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML

from madseg import paths
from madseg.checks import IMAGE_SUFFIXES, SizeSummary, check_params, image_sizes, suited_policy
from madseg.config import Params, load_params, merge_overlay, rounds_params
from madseg.io.atomic import write_json
from madseg.labels import make_class_list
from madseg.stage_code import sync_dvc_yaml
from madseg.stops import ConfigError, ExpectedStop

log = logging.getLogger(__name__)

DEMO_STAGES = ("make_world", "validity")  # the demo world and its hidden-truth checks
VALIDITY_ONLY_DEPS = (str(paths.METRICS / "validity.json"), str(paths.STUDY))  # what the report reads of them
DEMO_OUTPUTS = (
    *(
        "data/world",
        "data/index",
        "data/attributes",
        "data/embeddings",
        "data/slices",
        "data/predictions",
        "data/mining",
    ),
    *("data/study", "data/compare", "models/competitors", "models/export", "metrics"),
)
IMPORTED_TARGET = "models/imported/target.pt"
CAMPAIGN_HEADER = (
    "# madseg campaign, written by `madseg init`. Every stage reads its own section; unknown keys are errors."
)
# copy: into data/, `dvc add`ed (DVC then keeps one copy in its cache; `dvc config cache.type hardlink,symlink`
# links the workspace to it). external: where they lie, hashed there as dependencies. No hard links into the user's
# folders: `dvc add` would make the user's own files read-only cache entries
DataMode = Literal["copy", "external"]


@dataclass(frozen=True)
class CampaignSpec:
    """What `madseg init` is told: the user's data, classes, target and choices (see `madseg init --help`)."""

    voc: Path
    classes: list[str] | str  # names, background first, or a preset (voc)
    pools: list[Path] = field(default_factory=list)
    urls: Path | None = None
    target: Path | None = None
    form: str | None = None
    arch: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    annotation: Literal["labelstudio", "simulated"] = "labelstudio"
    truth: Path | None = None
    eval_pool: Path | None = None
    data: DataMode = "copy"
    rounds: int = 2  # fine-tuning rounds r (the paper: 2): rounds 0..r are mined, the last only measures
    input_policy: str | None = None
    preset: str = "pretrained"


def init_campaign(root: Path, spec: CampaignSpec, *, force: bool = False) -> list[str]:
    """Write the campaign's params.yaml and dvc.yaml under ``root``, place its data and import its target.

    Returns the values changed so that the data can satisfy them (``key: old -> new (why)``). Raises ConfigError
    listing every problem of the arguments before anything is written.
    """
    _check_spec(root, spec, force=force)
    _remove_demo_outputs(root)
    placed = _place_data(root, spec)
    params = _read_template("params.yaml")
    merge_overlay(params, _read_preset(root, spec.preset))
    del params["world"]
    changed = _fill_params(params, spec, placed, root)
    _write_yaml(root / "params.yaml", params, header=CAMPAIGN_HEADER)
    _write_pipeline(root, keep_validity=spec.truth is not None and spec.eval_pool is not None)
    loaded = load_params(root / "params.yaml")
    sync_dvc_yaml(root, loaded)
    if spec.target is not None:
        _import_target(root, spec, loaded)
    if problems := check_params(loaded, root):
        raise ConfigError("the campaign's params still have problems:\n  " + "\n  ".join(problems))
    return changed


def init_demo(root: Path, *, preset: str | None = None) -> None:
    """Bring back the embedded demo's params.yaml and dvc.yaml (a fresh clone's), with a preset overlay if named.

    The committed study figures (scripts/validity_study.py's, which the validity stage and the report fold in) were
    measured on the default demo: under a preset they read "not run" until the study runs there."""
    if problem := _not_a_project(root):
        raise ConfigError(f"madseg init: {problem}")
    if preset is None:
        (root / "params.yaml").write_text(_template_text("params.yaml"))
    else:
        params = _read_template("params.yaml")
        merge_overlay(params, _read_preset(root, preset))
        _write_yaml(root / "params.yaml", params, header=CAMPAIGN_HEADER)
        for record in (paths.STUDY, paths.STUDY_OPTIONS):
            write_json(root / record, {"status": "not run"})
    _write_pipeline(root, keep_validity=True, demo=True)
    sync_dvc_yaml(root, load_params(root / "params.yaml"))


def server_problems(params: Params) -> list[str]:
    """Label Studio's side of the params: reachable, the token accepted, enough accounts (`madseg check` only)."""
    if params.annotation.backend != "labelstudio":
        return []
    from madseg.annotation.backend import make_backend  # the SDK, only when the server is asked

    try:
        make_backend(params.annotation, classes=params.dataset.class_list()).check_annotators()
    except ExpectedStop as e:
        key = "annotation.annotators_per_task" if e.exit_code == 6 else "annotation.labelstudio"
        return [f"{key}: {e}"]
    return []


# ------------------------------------------------------------------------------------------------ arguments
def _not_a_project(root: Path) -> str | None:
    """Why ``root`` cannot take a campaign, if it cannot: init writes a DVC pipeline, so it runs at a clone's root."""
    if not (root / ".dvc").is_dir():
        return f"{root.resolve()} holds no .dvc/ — run madseg init at the root of your clone of madseg"
    return None


def _check_spec(root: Path, spec: CampaignSpec, *, force: bool) -> None:
    problems = [problem] if (problem := _not_a_project(root)) else []
    voc = spec.voc
    splits = [f"ImageSets/Segmentation/{split}.txt" for split in ("train", "val")]
    if not voc.is_dir():  # one line, not one per missing part of the layout
        problems.append(f"--voc: {voc} is no folder — give a folder in PASCAL VOC layout")
    else:
        for part in ("JPEGImages", "SegmentationClass", *splits):
            if not (voc / part).exists():
                problems.append(f"--voc: {voc / part} does not exist — give a folder in PASCAL VOC layout")
    for pool in spec.pools:
        if not pool.is_dir():
            problems.append(f"--pool: {pool} is no folder — give a folder of images")
    if not spec.pools and spec.urls is None:
        problems.append("--pool: no pool given — give a folder of images (--pool) or a URL list (--urls)")
    given = {
        "--urls": spec.urls,
        "--target": spec.target,
        "--truth": spec.truth,
        "--eval-pool": spec.eval_pool,
    }
    for flag, path in given.items():
        if path is not None and not path.exists():
            problems.append(f"{flag}: {path} does not exist")
    if spec.target is not None and spec.form is None:
        problems.append("--form: the target's form is missing — smp, torchvision or state_dict")
    try:
        make_class_list(spec.classes)
    except ValueError as e:
        problems.append(f"--classes: {e}")
    if spec.rounds < 0:
        problems.append(f"--rounds: {spec.rounds} — give 0 or more fine-tuning rounds (the paper: 2)")
    if spec.annotation == "simulated" and spec.truth is None:
        problems.append("--annotation: simulated raters need the pool's truth — give --truth DIR (a dry run)")
    params = root / "params.yaml"
    if params.exists() and not force and params.read_text() != _template_text("params.yaml"):
        problems.append("params.yaml: a campaign is set up here already — --force replaces it")
    if problems:
        raise ConfigError("madseg init: " + "\n  ".join(["", *problems]).lstrip("\n "))


# --------------------------------------------------------------------------------------------- data
def _remove_demo_outputs(root: Path) -> None:
    """The demo's outputs and records would leak into the campaign's report and `dvc status`: they go."""
    for rel in DEMO_OUTPUTS:
        path = root / rel
        if path.is_dir() and rel == "metrics":
            for child in path.iterdir():
                if child.name != "bench":  # benchmark figures describe the code, not the demo
                    _remove(child)
        else:
            _remove(path)
    for path in [
        *(root / "annotations").glob("round_[0-9]*"),
        *(root / "data/labelled").glob("round_[0-9]*"),
    ]:
        _remove(path)  # round_init (nothing labelled yet) stays: round 0 starts from it
    _remove(root / "dvc.lock")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@dataclass(frozen=True)
class _Placed:
    voc: str
    pools: list[str]
    urls: str | None
    truth: str | None
    eval_pool: str | None


def _place_data(root: Path, spec: CampaignSpec) -> _Placed:
    """Copy the user's folders into data/ and `dvc add` them, or name them in place (external)."""
    if spec.data == "external":
        absolute = [str(p.resolve()) if p else None for p in (spec.voc, spec.urls, spec.truth, spec.eval_pool)]
        return _Placed(absolute[0], [str(p.resolve()) for p in spec.pools], *absolute[1:])
    named = {"data/voc": spec.voc, "data/truth": spec.truth, "data/eval_pool": spec.eval_pool}
    several = len(spec.pools) > 1
    named |= {f"data/pool/{p.name}" if several else "data/pool": p for p in spec.pools}
    if spec.urls is not None:
        named["data/urls.txt"] = spec.urls
    tracked = []
    for rel, source in named.items():
        if source is None:
            continue
        dest = root / rel
        _remove(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            shutil.copy2(source, dest)
        tracked.append("data/pool" if rel.startswith("data/pool/") else rel)
    _dvc(root, "add", *dict.fromkeys(tracked))
    pools = sorted(r for r in named if r.startswith("data/pool"))
    return _Placed(
        voc="data/voc",
        pools=pools,
        urls="data/urls.txt" if spec.urls else None,
        truth="data/truth" if spec.truth else None,
        eval_pool="data/eval_pool" if spec.eval_pool else None,
    )


def _dvc(root: Path, *args: str) -> None:
    dvc = shutil.which("dvc")
    if dvc is None:
        raise ConfigError("dvc: not on PATH — run madseg from the project's virtualenv (.venv/bin)")
    result = subprocess.run([dvc, *args], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"dvc {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")


def _count_images(folders: list[Path]) -> int:
    return sum(
        name.lower().endswith(IMAGE_SUFFIXES) for folder in folders for _, _, names in os.walk(folder) for name in names
    )


# --------------------------------------------------------------------------------------------- params
def _fill_params(params: dict, spec: CampaignSpec, placed: _Placed, root: Path) -> list[str]:
    """Write the user's data, classes, input policy, target and annotation into ``params``; returns the changes
    made so that the data can satisfy them."""
    classes = make_class_list(spec.classes)
    params["dataset"].update(classes=list(classes.names), voc_root=placed.voc, train_split="train", val_split="val")
    crawl = params["crawl"]
    crawl.update(folders=placed.pools, url_list=placed.urls, reference_sets=[f"{placed.voc}/JPEGImages"])
    models = params["models"]
    sizes = image_sizes([root / placed.voc / "JPEGImages", *(root / p for p in placed.pools)])
    models.update(_input_policy(sizes, spec.input_policy, models))
    if spec.target is not None:
        models["target"] = {"name": "target", "source": "checkpoint", "path": IMPORTED_TARGET}
    annotation = params["annotation"]
    annotation["backend"] = spec.annotation
    annotation["simulated"]["truth_dir"] = placed.truth
    params["evaluation"]["eval_pool"] = placed.eval_pool
    params.update(rounds_params(spec.rounds))
    pool_size = _count_images([root / p for p in placed.pools])
    if placed.urls:
        pool_size += sum(1 for line in (root / placed.urls).read_text().splitlines() if line.strip())
    return _feasible(params, num_foreground=classes.num_classes - 1, pool_size=pool_size)


def _input_policy(sizes: SizeSummary | None, kind: str | None, models: dict) -> dict[str, Any]:
    """``input_size`` and ``input_policy`` for images of ``sizes`` (``kind`` None: the one that suits them).

    ``resize``: the images' longer side, a multiple of 32. ``shorter_side``: the shorter side kept up to 512
    (never upscaled past a multiple of 32), the longer at most twice that, training crops of at most 384.
    ``tiles``: windows of 512 at the images' own resolution, trained on crops of that size.
    """
    if sizes is None:
        return {}
    kind = kind or suited_policy(sizes, models["input_size"])
    policy = dict(models["input_policy"], kind=kind)
    if kind == "resize":
        return {"input_size": 32 * math.ceil(sizes.longer / 32), "input_policy": policy}
    if kind == "tiles":
        return {"input_size": 512, "input_policy": dict(policy, tile=512)}
    shorter = min(512, max(64, 32 * math.ceil(sizes.shorter / 32)))
    policy.update(shorter_side=shorter, max_side=2 * shorter)
    return {"input_size": min(shorter, 384), "input_policy": policy}


def _feasible(params: dict, *, num_foreground: int, pool_size: int) -> list[str]:
    """Lower or raise the values the data cannot satisfy: S and T fit the pool, T can be filled with the classes,
    the stability check has images to rank on. Returns ``key: old -> new (why)`` for each change."""
    selection, evaluation = params["selection"], params["evaluation"]
    wanted = {
        ("selection", "n4"): min(selection["n4"], max(1, pool_size // 10)),
        ("selection", "t_size"): min(selection["t_size"], max(4, pool_size // 5)),
    }
    wanted[("selection", "t_cap")] = max(
        selection["t_cap"], math.ceil(wanted[("selection", "t_size")] / num_foreground)
    )
    wanted[("evaluation", "k_min")] = min(evaluation["k_min"], max(2, wanted[("selection", "t_size")] // 2))
    why = {
        "n4": f"a tenth of the pool's {pool_size} images",
        "t_size": f"a fifth of the pool's {pool_size} images",
        "t_cap": f"{num_foreground} foreground classes must fill a test set of {wanted[('selection', 't_size')]}",
        "k_min": "the stability check ranks on at least half of T",
    }
    changed = []
    for (section, key), value in wanted.items():
        if params[section][key] != value:
            changed.append(f"{section}.{key}: {params[section][key]} -> {value} ({why[key]})")
            params[section][key] = value
    return changed


def import_checkpoint(
    source: Path,
    out: Path,
    params: Params,
    *,
    form: str,
    arch: str | None = None,
    kwargs: dict[str, Any] | None = None,
    input_size: int | None = None,
) -> dict:
    """`madseg import-model`: a model trained elsewhere as a madseg checkpoint at ``out``, with the class list,
    normalisation, input policy and the target's test-time augmentation of ``params`` (``input_size`` over
    ``models.input_size``). Returns its meta."""
    from madseg.models.checkpoint import save_checkpoint  # torch: only when a model is brought
    from madseg.models.importing import import_model

    m = params.models
    model, meta, provenance = import_model(
        form=form,
        source=source,
        classes=params.dataset.class_list().names,
        arch=arch,
        kwargs=kwargs or {},
        mean=m.mean,
        std=m.std,
        policy=m.input_policy.policy(input_size or m.input_size),
        tta=m.target.tta,
    )
    save_checkpoint(out, model, meta, provenance=provenance)
    return meta


def _import_target(root: Path, spec: CampaignSpec, params: Params) -> None:
    import_checkpoint(spec.target, root / IMPORTED_TARGET, params, form=spec.form, arch=spec.arch, kwargs=spec.kwargs)
    _dvc(root, "add", IMPORTED_TARGET)


# ------------------------------------------------------------------------------------------ templates
def _yaml() -> YAML:
    rt = YAML()
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    return rt


def _template_text(name: str) -> str:
    return resources.files("madseg.templates").joinpath(name).read_text()


def _read_template(name: str) -> Any:
    return _yaml().load(_template_text(name))


def _read_preset(root: Path, preset: str) -> dict:
    """A preset overlay: ``presets/NAME.yaml`` of the project, or a file; only the keys it changes."""
    path = Path(preset) if preset.endswith((".yaml", ".yml")) else root / "presets" / f"{preset}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in (root / "presets").glob("*.yaml"))
        if not names:
            raise ConfigError(
                f"--preset: {preset}: no presets/ folder in {root} — run it at a clone's root, or give a YAML file"
            )
        raise ConfigError(f"--preset: {preset} is no preset — name one of {names} or a YAML file")
    return _yaml().load(path.read_text()) or {}


def _write_yaml(path: Path, doc: Any, header: str | None = None) -> None:
    """Write ``doc`` with its comments; ``header`` replaces the template's first line."""
    buffer = io.StringIO()
    _yaml().dump(doc, buffer)
    text = buffer.getvalue()
    if header is not None:
        text = header + "\n" + text.partition("\n")[2]
    path.write_text(text)


def _write_pipeline(root: Path, *, keep_validity: bool, demo: bool = False) -> None:
    """dvc.yaml from the template: the demo's every stage, or a campaign's (no demo world; validity on request)."""
    doc = _read_template("pipeline.yaml")
    stages = doc["stages"]
    if not demo:
        for name in DEMO_STAGES:
            if name != "validity" or not keep_validity:
                del stages[name]
    if "validity" not in stages:
        deps = stages["report"]["deps"]
        for dep in VALIDITY_ONLY_DEPS:
            deps.remove(dep)
    _write_yaml(root / "dvc.yaml", doc)
