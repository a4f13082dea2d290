"""The acceptance test of a user's own campaign (issue 28 §6): a fresh clone set up by `madseg init` on the user's
own VOC set (JPEGs of odd sizes, non-demo classes), a folder of pool photos and a target they trained outside
madseg (smp's ``save_pretrained``); then one round against a real Label Studio server that the team already runs
(the session's server: the project holds only a ``.env``), rated and labelled through the server's API by three
annotators who joined by the invite link, each with their own token. Nothing of the demo world is used."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import yaml
from label_studio_sdk import LabelStudio

from madseg.annotation.brush import mask_to_results
from madseg.annotation.server import ADMIN_FILE, add_annotators, write_env_file
from madseg.io.images import encode_jpeg, image_id, read_mask, write_mask
from madseg.labels import make_class_list
from tests.project import copy_tracked, run

pytestmark = [pytest.mark.slow, pytest.mark.labelstudio]
CLASSES = make_class_list(["background", "leaf", "stone"])
SIZES = ((50, 75), (77, 50))  # (H, W): landscape and portrait, neither square nor the demo's 64 px
TARGET = "models/imported/target.pt"


def _scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An (h, w) image with a green ellipse (leaf) and/or a grey square (stone), and its label map."""
    image = np.full((h, w, 3), rng.integers(90, 160), np.uint8) + rng.integers(0, 12, (h, w, 3)).astype(np.uint8)
    label = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    if rng.random() < 0.8:
        cy, cx = rng.integers(10, h - 10), rng.integers(10, w - 10)
        leaf = ((yy - cy) / 8) ** 2 + ((xx - cx) / 11) ** 2 <= 1
        image[leaf], label[leaf] = (40, 170, 50), 1
    if rng.random() < 0.6:
        y, x = rng.integers(2, h - 14), rng.integers(2, w - 14)
        image[y : y + 12, x : x + 12], label[y : y + 12, x : x + 12] = (200, 200, 205), 2
    return image, label


def _user_data(out: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The user's files under ``out``: voc/ (S0/T0), pool/ (D, nested folders), ext_preds/ (an external system's
    masks by image id). Returns (pool truth, S0 train images as arrays for the user's own training)."""
    rng = np.random.default_rng(7)
    truth: dict[str, np.ndarray] = {}
    train: dict[str, np.ndarray] = {}
    for split, n in (("train", 24), ("val", 8)):
        names = []
        for i in range(n):
            image, label = _scene(rng, *SIZES[i % 2])
            name = f"{split}{i:03d}"
            data = encode_jpeg(image)
            (out / "voc/JPEGImages").mkdir(parents=True, exist_ok=True)
            (out / f"voc/JPEGImages/{name}.jpg").write_bytes(data)
            write_mask(out / f"voc/SegmentationClass/{name}.png", label, CLASSES)
            write_mask(out / f"ext_preds/{image_id(data)}.png", label, CLASSES)  # T0 predictions too
            names.append(name)
            if split == "train":
                train[name] = (image, label)
        (out / "voc/ImageSets/Segmentation").mkdir(parents=True, exist_ok=True)
        (out / f"voc/ImageSets/Segmentation/{split}.txt").write_text("\n".join(names) + "\n")
    for i in range(40):
        image, label = _scene(rng, *SIZES[i % 2])
        data = encode_jpeg(image)
        folder = out / "pool" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i}.jpg").write_bytes(data)
        truth[image_id(data)] = label
        noisy = label.copy()
        noisy[rng.random(label.shape) < 0.15] = 0  # the external system misses parts of objects
        write_mask(out / f"ext_preds/{image_id(data)}.png", noisy, CLASSES)
    return truth, train


def _train_outside_madseg(train: dict, out: Path, steps: int, seed: int) -> Path:
    """A tiny smp U-Net trained by the user's own loop (plain torch, 48x48 crops), saved with save_pretrained."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    net = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(16, 8, 4), classes=3)
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406])[:, None, None],
        torch.tensor([0.229, 0.224, 0.225])[:, None, None],
    )
    x = torch.stack([(torch.from_numpy(im[:48, :48]).permute(2, 0, 1) / 255 - mean) / std for im, _ in train.values()])
    y = torch.stack([torch.from_numpy(lb[:48, :48]).long() for _, lb in train.values()])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for step in range(steps):
        batch = slice(8 * step % len(x), 8 * step % len(x) + 8)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
        opt.step()
    net.save_pretrained(out)
    return out


def _scratch_clone(root: Path) -> None:
    """A fresh clone of this project in ``root``: its tracked files only (no demo outputs), its own git repo."""
    copy_tracked(root)
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "a fresh clone"], root)


def _join(url: str, invite: str, email: str) -> str:
    """What an annotator does: sign up through the invite link with their own password, then copy their API
    token (Account & Settings); returns that token."""
    path = invite.removeprefix(url)
    with httpx.Client(base_url=url, timeout=30.0) as web:
        web.get(path)  # the sign-up page sets the CSRF cookie
        signed = web.post(
            path,
            data={
                "email": email,
                "password": f"pw-{uuid.uuid4().hex}",
                "csrfmiddlewaretoken": web.cookies["csrftoken"],
            },
            headers={"Referer": url + path},
        )
        assert signed.status_code == 302, signed.text[-500:]
        return web.get("/api/current-user/token").json()["token"]


def _ran(done) -> set[str]:
    """The stages a `dvc repro` or a `madseg repro` ran."""
    said = done.stdout + done.stderr
    return set(re.findall(r"Running stage '([^']+)'", said)) | set(re.findall(r" (\S+) finished in \d+ s", said))


def test_a_users_own_campaign_one_round_with_three_annotators(label_studio, tmp_path):
    # the project must lie under the server's document root: Label Studio serves the task images from there
    root = label_studio.document_root / f"campaign-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    _scratch_clone(root)
    user = tmp_path / "mine"  # the user's own folders, outside the clone
    truth, train = _user_data(user)
    _train_outside_madseg(train, user / "target", steps=80, seed=0)

    # --- one command sets the campaign up, and it is valid as set up
    init = run(
        [
            "madseg",
            "init",
            "--voc",
            str(user / "voc"),
            "--pool",
            str(user / "pool"),
            "--classes",
            ",".join(CLASSES.names),
            "--target",
            str(user / "target"),
            "--form",
            "smp",
            "--annotation",
            "labelstudio",
            "--rounds",
            "1",
        ],
        root,
    )
    assert "Traceback" not in init.stderr and (root / TARGET).exists()
    # --- the team's server: a teammate gets its URL and the pipeline's token in .env, nothing else
    write_env_file(root / ".env", label_studio.url, label_studio.token)
    invite = add_annotators(label_studio.url, label_studio.token, [])
    tag = uuid.uuid4().hex[:6]
    raters = [
        LabelStudio(base_url=label_studio.url, api_key=_join(label_studio.url, invite, f"{k}{tag}@team.test"))
        for k in range(3)
    ]
    admin = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)

    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["dataset"]["classes"] == list(CLASSES.names) and params["annotation"]["backend"] == "labelstudio"
    assert "0" in params["finetunes"], params["rounds"]  # one round that fine-tunes
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert not {"make_world", "validity"} & set(stages)  # only the campaign's stages
    run(["madseg", "check"], root)

    # a small params edit for CI speed: fewer, shorter competitors (plus an external system's masks, a
    # competitor that is only a folder of predictions), one fine-tuning candidate, one epoch
    competitors = dict(list(params["models"]["competitors"].items())[:1])
    for spec in competitors.values():
        spec["steps"] = 20
    shutil.copytree(user / "ext_preds", root / "ext_preds")
    competitors["ext"] = {"source": "predictions", "path": "ext_preds"}
    params["models"]["competitors"] = competitors
    params["finetune"].update(lr_grid=[0.01], epochs=1, workers=1)
    params["evaluation"]["bootstrap"] = 50
    # a pool of 40 images and a target trained for 80 steps: every object size competes, so M can fill T
    params["mining"]["area_quantiles"] = [0.0, 1.0]
    params["annotation"]["labelstudio"].update(
        document_root=str(label_studio.document_root), project_prefix=f"c{uuid.uuid4().hex[:6]}"
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["madseg", "dvc-deps"], root)  # the new competitor's folder in (the scratch clone's own dvc.yaml)
    run(["madseg", "check"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "my campaign"], root)

    # round 0 stops where people have to rate, saying how much is left and where: a message, not a crash
    # (`madseg repro`: dvc repro with independent stages side by side)
    stopped = run(["madseg", "repro", "import_scores@0"], root, check=False)
    said = stopped.stdout + stopped.stderr
    assert stopped.returncode == 3 and "Traceback" not in said, said[-3000:]
    assert "remain" in said and label_studio.url in said and "/data?task=" in said
    early = run(["madseg", "pull", "--round", "0"], root, check=False)
    assert early.returncode == 3 and "Traceback" not in early.stderr and "madseg pull --round 0" in early.stderr
    assert not (root / "data/world").exists()  # the demo world is never generated in a real campaign
    index = (root / "data/index/pool.csv").read_text()
    assert "data/pool/a/" in index and "data/pool/b/" in index
    receipt = json.loads((root / "annotations/round_0/weak_export.json").read_text())
    tasks = {t.data["image_id"]: t.id for t in admin.tasks.list(project=receipt["project_id"], fields="all")}
    for n, task in enumerate(tasks.values()):
        for k, rater in enumerate(raters):  # each with their own token: the server records who rated
            choice = str(1 + (n + k) % 5)
            rater.annotations.create(
                task,
                result=[
                    {
                        "from_name": "rating",
                        "to_name": "image",
                        "type": "choices",
                        "value": {"choices": [choice]},
                    }
                ],
                lead_time=2.0,
            )

    # then pixel labels: S starts from the target's prediction, T from nothing
    stopped = run(["madseg", "repro", "import_masks@0"], root, check=False)
    assert stopped.returncode == 3 and "remain" in stopped.stdout + stopped.stderr
    receipt = json.loads((root / "annotations/round_0/pixel_export.json").read_text())
    for task in admin.tasks.list(project=receipt["project_id"], fields="all"):
        raters[0].annotations.create(
            task.id, result=mask_to_results(truth[task.data["image_id"]], CLASSES), lead_time=30.0
        )

    done = run(["madseg", "repro", "evaluate@0", "finetune@0", "export"], root)
    assert {"import_masks@0", "finetune@0", "evaluate@0", "export"} <= _ran(done), done.stderr[-3000:]
    metrics = json.loads((root / "metrics/rounds/round_0.json").read_text())
    assert {"target.T0.miou", "ext.T0.miou", "target.T.miou", "ext.T.miou", "target.T.iou.leaf"} <= set(metrics)
    assert metrics["ext.T0.miou"] == 1.0  # the external system's T0 masks are the truth itself
    for mask in (root / "annotations/round_0/masks").glob("*.png"):
        np.testing.assert_array_equal(read_mask(mask, CLASSES), truth[mask.stem])
    scores = (root / "annotations/round_0/scores.csv").read_text()
    assert len(scores.splitlines()) == 1 + 3 * len(tasks)  # three people's ratings of every image
    assert (root / "models/target_1.pt").exists() and any((root / "models/export").iterdir())
    # nothing of a local server was started or written: the team's server did it all
    assert not (root / ".labelstudio").exists() and not list(root.rglob(ADMIN_FILE))
    # the snapshots are now the source of truth: a second repro does not contact the server
    again = run(
        ["dvc", "repro", "evaluate@0", "finetune@0", "export"],
        root,
        env={"LABEL_STUDIO_URL": "http://127.0.0.1:9"},
    )
    assert not _ran(again)

    # --- an annotator changes their mind: a failed pull (server down) keeps the snapshot and the metrics byte for
    # byte, a good one reruns only what depends on the answers
    kept = [
        "annotations/round_0/scores.csv",
        "annotations/round_0/weak_raw.json",
        "metrics/annotation/weak_round_0.json",
        "metrics/rounds/round_0.json",
        "dvc.lock",
    ]
    before = {p: (root / p).read_bytes() for p in kept}
    down = {"LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_API_KEY": "x"}
    failed = run(["madseg", "pull", "--round", "0"], root, check=False, env=down)
    assert failed.returncode == 4 and "cannot reach Label Studio" in failed.stderr
    assert "Traceback" not in failed.stderr and {p: (root / p).read_bytes() for p in kept} == before
    task = next(iter(tasks.values()))
    mine = [a for a in raters[1].annotations.list(id=task) if a.completed_by == raters[1].users.whoami().id]
    changed = [{"from_name": "rating", "to_name": "image", "type": "choices", "value": {"choices": ["5"]}}]
    raters[1].annotations.update(id=mine[0].id, result=changed)
    pulled = run(["madseg", "pull", "--round", "0", "--answers", "ratings"], root, check=False)
    ran = _ran(pulled)
    # the changed rating may move an image into S: then its mask is asked for (exit 3), else the round completes
    assert pulled.returncode in (0, 3) and "Traceback" not in pulled.stderr, pulled.stderr[-3000:]
    upstream = (
        "crawl_index",
        "attributes",
        "pretrain",
        "import_target",
        "infer",
        "mine@",
        "export_weak_tasks@",
        "import_scores@",
    )
    assert not [stage for stage in ran if stage.startswith(upstream)], ran
    assert "select_S@0" in ran  # the new ratings reached what depends on them
    assert (root / "annotations/round_0/scores.csv").read_bytes() != before[kept[0]]

    # --- the user re-imports other weights to the same path: DVC sees it, and names what reads the target
    _train_outside_madseg(train, user / "target2", steps=4, seed=1)
    run(["madseg", "import-model", str(user / "target2"), "--form", "smp", "--out", TARGET], root)
    status = json.loads(run(["dvc", "status", "--json"], root).stdout or "{}")
    readers = {
        stage
        for stage, changes in status.items()
        if any(TARGET in (c.get("changed deps") or {}) for c in changes if isinstance(c, dict))
    }
    assert readers, status  # e.g. the round-0 target's copy or its predictions
