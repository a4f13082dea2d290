"""A real campaign through the same DVC stages: the user's own VOC dataset and class names, their own image folder,
a competitor that is only a folder of precomputed masks, and a real Label Studio server as the annotators."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from label_studio_sdk import LabelStudio

from madseg.annotation.brush import mask_to_results
from madseg.io.images import encode_jpeg, image_id, read_mask, write_mask
from madseg.labels import make_class_list
from madseg.metrics import confusion_matrix, mean_iou
from tests.project import ROOT, run

pytestmark = [pytest.mark.slow, pytest.mark.labelstudio]
CLASSES = make_class_list(["background", "leaf", "stone"])


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 40x56 image (not square, not the demo's size) with a green ellipse (leaf) and/or a grey square (stone)."""
    h, w = 40, 56
    image = np.full((h, w, 3), rng.integers(90, 160), np.uint8) + rng.integers(0, 12, (h, w, 3)).astype(
        np.uint8
    )
    label = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    if rng.random() < 0.8:
        cy, cx = rng.integers(10, 30), rng.integers(10, 46)
        leaf = ((yy - cy) / 7) ** 2 + ((xx - cx) / 11) ** 2 <= 1
        image[leaf], label[leaf] = (40, 170, 50), 1
    if rng.random() < 0.6:
        y, x = rng.integers(2, 26), rng.integers(2, 42)
        image[y : y + 12, x : x + 12], label[y : y + 12, x : x + 12] = (200, 200, 205), 2
    return image, label


def _make_campaign(root: Path) -> dict[str, np.ndarray]:
    """The user's files: data/voc (S0/T0), data/pool (D, nested), ext_preds (a competitor's masks by image id)."""
    rng = np.random.default_rng(7)
    truth: dict[str, np.ndarray] = {}
    for split, n in (("train", 30), ("val", 10)):
        names = []
        for i in range(n):
            image, label = _scene(rng)
            name = f"{split}{i:03d}"
            data = encode_jpeg(image)
            (root / "data/voc/JPEGImages").mkdir(parents=True, exist_ok=True)
            (root / f"data/voc/JPEGImages/{name}.jpg").write_bytes(data)
            write_mask(root / f"data/voc/SegmentationClass/{name}.png", label, CLASSES)
            write_mask(root / f"ext_preds/{image_id(data)}.png", label, CLASSES)  # T0 predictions too
            names.append(name)
        (root / "data/voc/ImageSets/Segmentation").mkdir(parents=True, exist_ok=True)
        (root / f"data/voc/ImageSets/Segmentation/{split}.txt").write_text("\n".join(names) + "\n")
    for i in range(48):
        image, label = _scene(rng)
        data = encode_jpeg(image)
        folder = root / "data/pool" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i}.jpg").write_bytes(data)
        truth[image_id(data)] = label
        noisy = label.copy()
        noisy[rng.random(label.shape) < 0.15] = 0  # the external system misses parts of objects
        write_mask(root / f"ext_preds/{image_id(data)}.png", noisy, CLASSES)
    return truth


def test_a_real_campaign_runs_the_same_stages_with_label_studio(label_studio, tmp_path):
    root = label_studio.document_root / f"campaign-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    for rel in ("dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config", ".gitignore", "pyproject.toml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, root / rel)
    shutil.copytree(ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for keep in ("annotations/round_init", "data/labelled/round_init"):
        shutil.copytree(ROOT / keep, root / keep)
    truth = _make_campaign(root)

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["dataset"] = {
        "classes": list(CLASSES.names),
        "voc_root": "data/voc",
        "train_split": "train",
        "val_split": "val",
    }
    params["crawl"].update(folders=["data/pool"], reference_sets=["data/voc/JPEGImages"])
    params["models"]["input_size"] = 32
    params["models"]["target"] = {"name": "target", "arch": "smp.Unet", "steps": 60,
                                  "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}}  # fmt: skip
    params["models"]["competitors"] = {"ext": {"source": "predictions", "path": "ext_preds"}}
    params["mining"]["n3"] = 4
    params["selection"].update(n4=3, t_size=4, t_cap=4)
    params["annotation"]["backend"] = "labelstudio"
    params["annotation"]["labelstudio"].update(document_root=str(label_studio.document_root),
                                               project_prefix=f"c{uuid.uuid4().hex[:6]}")  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    refused = run(["madseg", "run", "crawl_index"], root, check=False)
    assert (
        refused.returncode == 7 and "run `madseg dvc-deps`" in refused.stderr
    )  # dvc.yaml would miss data/pool
    run(["madseg", "dvc-deps"], root)  # the pool's folders in, the simulated truth out
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "campaign"], root)
    env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    users = [client.users.create(username=f"r{uuid.uuid4().hex[:6]}", email=f"{k}{uuid.uuid4().hex[:6]}@r.test").id
             for k in range(3)]  # fmt: skip

    # round 0 stops where people have to rate, saying how much is left and where: a message, not a crash
    stopped = run(["dvc", "repro", "import_scores@0"], root, check=False, env=env)
    said = stopped.stdout + stopped.stderr
    assert stopped.returncode != 0 and "exited with 3" in said and "Traceback" not in said
    assert "remain" in said and label_studio.url in said and "/data?task=" in said
    early = run(["madseg", "pull", "--round", "0"], root, check=False, env=env)
    assert (
        early.returncode == 3 and "Traceback" not in early.stderr and "madseg pull --round 0" in early.stderr
    )
    assert not (root / "data/world").exists()  # the demo world is never generated in a real campaign
    index = (root / "data/index/pool.csv").read_text()
    assert "data/pool/a/" in index and "data/pool/b/" in index
    receipt = json.loads((root / "annotations/round_0/weak_export.json").read_text())
    tasks = {t.data["image_id"]: t.id for t in client.tasks.list(project=receipt["project_id"], fields="all")}
    for n, task in enumerate(tasks.values()):
        for user in users:
            result = [
                {
                    "from_name": "rating",
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": [str(1 + n % 5)]},
                }
            ]
            client.annotations.create(task, result=result, completed_by=user, lead_time=2.0)

    # then it goes on to pixel labels: S starts from the target's prediction, T from nothing
    stopped = run(["dvc", "repro", "import_masks@0"], root, check=False, env=env)
    assert stopped.returncode != 0 and "remain" in stopped.stdout + stopped.stderr
    receipt = json.loads((root / "annotations/round_0/pixel_export.json").read_text())
    for task in client.tasks.list(project=receipt["project_id"], fields="all"):
        client.annotations.create(task.id, result=mask_to_results(truth[task.data["image_id"]], CLASSES),
                                  completed_by=users[0], lead_time=30.0)  # fmt: skip

    run(["dvc", "repro", "evaluate@0"], root, env=env)
    metrics = json.loads((root / "metrics/rounds/round_0.json").read_text())
    assert {"target.T0.miou", "ext.T0.miou", "target.T.miou", "ext.T.miou", "target.T.iou.leaf"} <= set(
        metrics
    )
    assert metrics["ext.T0.miou"] == 1.0  # the external system's T0 masks are the truth itself
    for mask in (root / "annotations/round_0/masks").glob("*.png"):
        np.testing.assert_array_equal(read_mask(mask, CLASSES), truth[mask.stem])
    # the snapshots are now the source of truth: a second repro does not contact the server
    assert (
        "Running stage"
        not in run(
            ["dvc", "repro", "evaluate@0"], root, env={"LABEL_STUDIO_URL": "http://127.0.0.1:9"}
        ).stdout
    )

    # the paper's way of comparing two models, through the same server: a MAD competition between the target
    # and the external system, labelled by people; the first call stops until the images are labelled
    compare = ["madseg", "compare", "models/target_0.pt", "models/competitors/ext", "--pool", "data/index/pool.csv",
               "--name", "target-vs-ext", "--name-a", "target", "--name-b", "ext", "--n", "2"]  # fmt: skip
    stopped = run(compare, root, check=False, env=env)
    assert (
        stopped.returncode == 3
        and "still need labels" in stopped.stderr
        and "Traceback" not in stopped.stderr
    )
    receipt = json.loads((root / "data/compare/target-vs-ext/pixel_export.json").read_text())
    labelled = []
    for task in client.tasks.list(project=receipt["project_id"], fields="all"):
        labelled.append(task.data["image_id"])
        client.annotations.create(task.id, result=mask_to_results(truth[task.data["image_id"]], CLASSES),
                                  completed_by=users[0], lead_time=30.0)  # fmt: skip
    run(compare, root, env=env)
    scores = json.loads((root / "metrics/compare/target-vs-ext.json").read_text())
    assert scores["n_images"] == len(labelled) > 0
    # the people's masks are what both models are scored against: recompute the external system's score
    ext_cm = sum(
        confusion_matrix(truth[i], read_mask(root / f"ext_preds/{i}.png", CLASSES), CLASSES.num_classes)
        for i in labelled
    )
    assert scores["ext.miou"] == pytest.approx(mean_iou(ext_cm))
    assert scores["wins.target"] + scores["wins.ext"] + scores["ties"] == len(labelled)

    # annotators change their minds: a failed pull (server down) keeps the snapshot and the metrics byte for byte,
    # a good one reruns only what depends on the answers
    kept = ["annotations/round_0/scores.csv", "annotations/round_0/weak_raw.json",
            "metrics/annotation/weak_round_0.json", "metrics/rounds/round_0.json", "dvc.lock"]  # fmt: skip
    before = {p: (root / p).read_bytes() for p in kept}
    down = {"LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_API_KEY": "x"}
    failed = run(["madseg", "pull", "--round", "0"], root, check=False, env=down)
    assert failed.returncode == 4 and "cannot reach Label Studio" in failed.stderr
    assert "Traceback" not in failed.stderr and {p: (root / p).read_bytes() for p in kept} == before
    receipt = json.loads((root / "annotations/round_0/weak_export.json").read_text())
    task = next(iter(client.tasks.list(project=receipt["project_id"], fields="all")))
    (first, *_) = client.annotations.list(id=task.id)
    changed = [{"from_name": "rating", "to_name": "image", "type": "choices", "value": {"choices": ["5"]}}]
    client.annotations.update(id=first.id, result=changed)
    pulled = run(["madseg", "pull", "--round", "0", "--answers", "ratings"], root, check=False, env=env)
    ran = set(re.findall(r"Running stage '([^']+)'", pulled.stdout + pulled.stderr))
    upstream = (
        "make_world",
        "crawl_index",
        "pretrain",
        "infer@",
        "infer_target@0",
        "mine@0",
        "export_weak_tasks@0",
        "import_scores@0",
    )
    assert not [stage for stage in ran if stage.startswith(upstream)], ran
    assert (
        "Traceback" not in pulled.stderr
        and (root / "annotations/round_0/scores.csv").read_bytes() != before[kept[0]]
    )
    assert "select_S@0" in ran  # the new ratings reached what depends on them
