"""The Label Studio backend against a real server (one per session, see conftest.py): the weak-scoring
round trip with three annotator users posting through the API, idempotent re-export, incomplete annotation,
the pixel round trip with pre-annotations decoding exactly, and clear errors (server down, bad token)."""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from label_studio_sdk import LabelStudio

from madseg.annotation.backend import make_backend
from madseg.annotation.brush import mask_to_results
from madseg.annotation.labelstudio import AnnotationServerError, LabelStudioBackend
from madseg.annotation.server import free_port
from madseg.annotation.tasks import LEVELS, AnnotationError, AnnotationIncomplete
from madseg.config import AnnotationParams, LabelStudioParams
from madseg.io.images import encode_png
from madseg.labels import IGNORE_INDEX, make_class_list
from tests.project import ROOT

CLASSES = make_class_list("demo")
server = pytest.mark.labelstudio


def _backend(ls, **kw) -> LabelStudioBackend:
    prefix = f"t{uuid.uuid4().hex[:8]}"  # a fresh project per test on the shared server
    return LabelStudioBackend(
        ls.url,
        ls.token,
        classes=CLASSES,
        annotators_per_task=3,
        project_prefix=prefix,
        document_root=ls.document_root,
    )


def _files(ls, folder: str, ids: list[str], shape=(8, 10)) -> pd.DataFrame:
    d = ls.document_root / folder
    d.mkdir(parents=True, exist_ok=True)
    for i in ids:
        (d / f"{i}.png").write_bytes(encode_png(np.zeros((*shape, 3), np.uint8)))
    return pd.DataFrame({"image_id": ids, "path": [str(d / f"{i}.png") for i in ids]})


def _rate(client: LabelStudio, task_id: int, user: int, score: int, ood: bool = False, lead: float = 1.5) -> None:
    result = [{"from_name": "rating", "to_name": "image", "type": "choices", "value": {"choices": [str(score)]}}]
    if ood:
        result.append(
            {"from_name": "ood", "to_name": "image", "type": "choices", "value": {"choices": ["out of domain"]}}
        )
    client.annotations.create(task_id, result=result, completed_by=user, lead_time=lead)


def _tasks(client: LabelStudio, pid: int) -> dict[str, int]:
    return {t.data["image_id"]: t.id for t in client.tasks.list(project=pid, fields="all")}


def _users(client: LabelStudio, tag: str) -> list[int]:
    return [client.users.create(username=f"{tag}{k}", email=f"{tag}{k}@raters.test").id for k in range(3)]


@server
@pytest.mark.slow
def test_weak_round_trip_idempotent_and_incomplete(label_studio):
    backend = _backend(label_studio)
    client = backend.client
    ids = [f"{k:016x}" for k in range(4)]
    items = _files(label_studio, "round_0/overlays/rater", ids)
    receipt = backend.export_weak("0", items)
    assert receipt["task_count"] == 4 and receipt["images"] == ids
    project = client.projects.get(receipt["project_id"])
    assert project.title == receipt["project_title"] == f"{backend.prefix} round 0 weak"
    assert project.maximum_annotations == 3 and "out of domain" in project.expert_instruction
    tasks = _tasks(client, project.id)
    assert sorted(tasks) == ids
    task = client.tasks.get(tasks[ids[0]])
    assert task.data["image"] == f"/data/local-files/?d=round_0/overlays/rater/{ids[0]}.png"

    users = _users(client, f"r{uuid.uuid4().hex[:6]}_")
    planted = {ids[0]: [1, 2, 1], ids[1]: [5, 4, 5], ids[2]: [3, 3, 2], ids[3]: [4, 4, 4]}
    for image in ids[:2]:
        for user, score in zip(users, planted[image], strict=True):
            _rate(client, tasks[image], user, score, ood=(image == ids[1] and user == users[2]))
    _rate(client, tasks[ids[2]], users[0], 3)
    # incomplete: stops, says how many are done and remain, and where
    with pytest.raises(AnnotationIncomplete) as e:
        backend.import_weak(receipt)
    msg = str(e.value)
    assert "2 of 4 tasks" in msg and "2 remain" in msg and f"{label_studio.url}/projects/{project.id}" in msg
    assert "madseg pull --round 0" in msg and e.value.pending == ids[2:]
    assert f"{ids[3]}: {label_studio.url}/projects/{project.id}/data?task={tasks[ids[3]]}" in msg

    # re-export: same project, no duplicate tasks, answers kept; a new image adds exactly one task
    again = backend.export_weak("0", items)
    assert again == receipt
    assert len(_tasks(client, project.id)) == 4
    more = pd.concat([items, _files(label_studio, "round_0/overlays/rater", ["f" * 16])], ignore_index=True)
    backend.export_weak("0", more)
    assert len(_tasks(client, project.id)) == 5
    backend.export_weak("0", items)  # the unannotated extra task is dropped again
    assert len(_tasks(client, project.id)) == 4
    assert len([p for p in client.projects.list() if p.title == receipt["project_title"]]) == 1

    for user, score in zip(users[1:], planted[ids[2]][1:], strict=True):
        _rate(client, tasks[ids[2]], user, score)
    for user, score in zip(users, planted[ids[3]], strict=True):
        _rate(client, tasks[ids[3]], user, score, lead=2.5)
    # a skipped task does not count as an answer
    client.annotations.create(tasks[ids[3]], result=[], was_cancelled=True, completed_by=users[0])
    raw, table = backend.import_weak(receipt)
    emails = {u.id: u.email for u in client.users.list()}
    want = sorted(
        (image, emails[user], score, image == ids[1] and user == users[2])
        for image in ids
        for user, score in zip(users, planted[image], strict=True)
    )
    assert sorted(map(tuple, table[["image_id", "annotator", "score", "out_of_domain"]].values.tolist())) == want
    assert table["lead_time_s"].sum() == pytest.approx(9 * 1.5 + 3 * 2.5)
    assert raw["backend"] == "labelstudio" and [t["data"]["image_id"] for t in raw["tasks"]] == ids
    assert set(table["score"]) <= set(range(1, len(LEVELS) + 1))


@server
@pytest.mark.slow
def test_malformed_answer_names_the_task(label_studio):
    backend = _backend(label_studio)
    backend.annotators_per_task = 1
    receipt = backend.export_weak("3", _files(label_studio, "round_3/overlays/rater", ["a" * 16]))
    task = _tasks(backend.client, receipt["project_id"])["a" * 16]
    user = _users(backend.client, f"m{uuid.uuid4().hex[:6]}_")[0]
    _rate(backend.client, task, user, 9)
    with pytest.raises(AnnotationError, match=f"task {task} .*exactly one rating"):
        backend.import_weak(receipt)


@server
@pytest.mark.slow
def test_pixel_round_trip_with_preannotations(label_studio):
    backend = _backend(label_studio)
    client = backend.client
    rng = np.random.default_rng(3)
    ids = ["1" * 16, "2" * 16, "3" * 16]
    roles = ["S", "T", "both"]
    shape = (37, 50)
    truth = {}
    for i in ids:
        m = rng.integers(0, CLASSES.num_classes, size=shape).astype(np.uint8)
        m[:5] = 0
        m[-2:, :] = IGNORE_INDEX
        truth[i] = m
    items = _files(label_studio, "pool/images", ids, shape)
    items["role"], items["height"], items["width"] = roles, shape[0], shape[1]
    prediction = truth[ids[0]].copy()
    prediction[10:20] = 2  # the target's prediction, different from the truth
    receipt = backend.export_pixel("1", items, {ids[0]: prediction})
    project = client.projects.get(receipt["project_id"])
    assert project.maximum_annotations == 1 and "BrushLabels" in project.label_config
    tasks = _tasks(client, project.id)
    assert client.tasks.get(tasks[ids[0]]).total_predictions == 1  # S starts from the target's prediction
    assert client.tasks.get(tasks[ids[1]]).total_predictions == 0  # T starts empty
    assert client.tasks.get(tasks[ids[2]]).total_predictions == 0  # both: starts empty
    assert backend.export_pixel("1", items, {ids[0]: prediction}) == receipt  # idempotent

    with pytest.raises(AnnotationIncomplete, match="0 of 3 tasks"):
        backend.import_pixel(receipt)
    user = _users(client, f"p{uuid.uuid4().hex[:6]}_")[0]
    # S: the pre-annotation submitted unchanged, as an annotator accepting it in the UI does
    pred = client.predictions.list(task=tasks[ids[0]])[0]
    client.annotations.create(tasks[ids[0]], result=pred.result, completed_by=user, lead_time=30.0)
    for i in ids[1:]:
        client.annotations.create(
            tasks[i], result=mask_to_results(truth[i], CLASSES), completed_by=user, lead_time=60.0
        )
    raw, table, masks = backend.import_pixel(receipt)
    np.testing.assert_array_equal(masks[ids[0]], prediction)
    for i in ids[1:]:
        np.testing.assert_array_equal(masks[i], truth[i])
    assert table["role"].tolist() == roles and table["lead_time_s"].sum() == 150.0
    assert raw["tasks"][0]["predictions"][0]["result"]  # predictions exported whole, not as ids


@server
@pytest.mark.slow
def test_too_few_accounts_for_the_annotators_per_task_stop_the_export(label_studio):
    from madseg.annotation.server import add_annotators
    from madseg.stops import TooFewAnnotators

    backend = _backend(label_studio)
    people = len(backend._users())
    backend.annotators_per_task = people + 1
    with pytest.raises(TooFewAnnotators, match=rf"annotators_per_task is {people + 1}, but .* has {people} account"):
        backend.export_weak("0", _files(label_studio, "few/overlays/rater", ["b" * 16]))
    invite = add_annotators(label_studio.url, label_studio.token, [f"n{uuid.uuid4().hex[:6]}@team.test"])
    assert invite.startswith(label_studio.url)
    assert backend.export_weak("0", _files(label_studio, "few/overlays/rater", ["b" * 16]))["task_count"] == 1


def test_server_down_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    backend = LabelStudioBackend(url, "x" * 40, classes=CLASSES, annotators_per_task=3)
    with pytest.raises(AnnotationServerError, match=f"cannot reach Label Studio at {url}.*make labelstudio"):
        backend.export_weak("0", pd.DataFrame({"image_id": [], "path": []}))


def test_missing_address_is_a_clear_error(tmp_path):
    params = AnnotationParams(backend="labelstudio", labelstudio=LabelStudioParams(env_file=str(tmp_path / ".env")))
    with pytest.raises(AnnotationServerError, match="LABEL_STUDIO_URL"):
        make_backend(params, classes=CLASSES, environ={})
    (tmp_path / ".env").write_text(
        "# written by make labelstudio\nLABEL_STUDIO_URL=http://h:1/\nLABEL_STUDIO_API_KEY='k'\n"
    )
    backend = make_backend(params, classes=CLASSES, environ={})
    assert (backend.url, backend.client is not None) == ("http://h:1", True)
    # the environment wins over the file (a teammate's shell points at the team's server)
    team = {"LABEL_STUDIO_URL": "http://team:8080", "LABEL_STUDIO_API_KEY": "t"}
    assert make_backend(params, classes=CLASSES, environ=team).url == "http://team:8080"


@server
@pytest.mark.slow
def test_bad_token_is_a_clear_error(label_studio):
    backend = LabelStudioBackend(label_studio.url, "0" * 40, classes=CLASSES, annotators_per_task=3)
    with pytest.raises(AnnotationServerError, match="refused the API token"):
        backend.check()


@server
@pytest.mark.slow
def test_stages_on_label_studio(label_studio, monkeypatch):
    """The four stages on annotation.backend labelstudio; the project root is the server's document root."""
    from madseg.config import load_params
    from madseg.io.atomic import read_json
    from madseg.io.images import read_mask
    from madseg.io.tables import read_csv, write_csv
    from madseg.stages import export_pixel_tasks, export_weak_tasks, import_masks, import_scores
    from tests.test_annotation_simulated import make_tiny_project

    root = label_studio.document_root / "project"
    root.mkdir()
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    monkeypatch.chdir(root)
    ids, truth = make_tiny_project()
    ls = dataclasses.replace(params.annotation.labelstudio, project_prefix=f"s{uuid.uuid4().hex[:8]}")
    params = dataclasses.replace(
        params, annotation=dataclasses.replace(params.annotation, backend="labelstudio", labelstudio=ls)
    )
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)

    export_weak_tasks.run(params, round_key="0")
    receipt = read_json("annotations/round_0/weak_export.json")
    with pytest.raises(AnnotationIncomplete, match="0 of 6 tasks"):
        import_scores.run(params, round_key="0")
    assert not Path("annotations/round_0/scores.csv").exists()
    tasks = _tasks(client, receipt["project_id"])
    assert client.tasks.get(tasks[ids[0]]).data["image"].endswith(f"rater/{ids[0]}.png")
    users = _users(client, f"g{uuid.uuid4().hex[:6]}_")
    for n, image in enumerate(ids):
        for user in users:
            _rate(client, tasks[image], user, 1 + n % 5)
    import_scores.run(params, round_key="0")
    scores = read_csv("annotations/round_0/scores.csv", required=["image_id", "score"])
    assert len(scores) == 18 and scores.groupby("image_id")["score"].first().tolist() == [1, 2, 3, 4, 5, 1]
    assert read_json("metrics/annotation/weak_round_0.json")["ratings_received"] == 18

    write_csv("annotations/round_0/S.csv", pd.DataFrame({"image_id": ids[:2]}))
    write_csv("annotations/round_0/T.csv", pd.DataFrame({"image_id": ids[1:3]}))
    export_pixel_tasks.run(params, round_key="0")
    receipt = read_json("annotations/round_0/pixel_export.json")
    tasks = _tasks(client, receipt["project_id"])
    assert [client.tasks.get(tasks[i]).total_predictions for i in ids[:3]] == [1, 0, 0]
    for i in ids[:3]:
        client.annotations.create(tasks[i], result=mask_to_results(truth[i], CLASSES), completed_by=users[0])
    import_masks.run(params, round_key="0")
    for i in ids[:3]:
        np.testing.assert_array_equal(read_mask(f"annotations/round_0/masks/{i}.png", CLASSES), truth[i])
    assert read_csv("annotations/round_0/masks.csv")["role"].tolist() == ["S", "both", "T"]


def test_users_file_one_address_a_line_with_comments(tmp_path):
    from madseg.annotation.server import read_users, team_users
    from madseg.config import ConfigError

    people = tmp_path / "team.txt"
    people.write_text("# the raters of 2026\nana@lab.org\n\n  bo@lab.org  # part time\nana@lab.org\n")
    assert team_users(["cy@lab.org", "bo@lab.org"], people) == ["cy@lab.org", "bo@lab.org", "ana@lab.org"]
    assert team_users([], None) == []
    with pytest.raises(ConfigError, match=r"team.txt, line 2: 'ana at lab.org' is not an e-mail address"):
        read_users("ok@lab.org\nana at lab.org\n", "team.txt")
    with pytest.raises(ConfigError, match=r"annotation.labelstudio.users, line 1: 'ana'"):
        team_users(["ana"], None)
    with pytest.raises(ConfigError, match=r"users_file: .*nobody.txt does not exist"):
        team_users([], tmp_path / "nobody.txt")


def test_only_loopback_is_private():
    from madseg.annotation.server import exposure_warning, is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "127.0.1.1", "localhost", "::1", "[::1]"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.20", "labelbox.lab.org"]))
    said = exposure_warning("0.0.0.0")
    assert all(w in said for w in ("0.0.0.0", "sign-in page", "invitation", "firewall", "VPN", "TLS"))


@server
@pytest.mark.slow
def test_a_server_for_remote_annotators_listens_on_every_interface(label_studio, tmp_path, caplog):
    """`make labelstudio HOST=0.0.0.0`: reachable here at 127.0.0.1, with the warning of what it exposes."""
    from madseg.annotation.server import shared_template_dir, start_server
    from tests.conftest import label_studio_executable

    exe = label_studio_executable()
    with caplog.at_level("WARNING", logger="madseg.annotation.server"):
        handle = start_server(
            exe,
            tmp_path / "data",
            document_root=tmp_path,
            host="0.0.0.0",
            template_dir=shared_template_dir(exe),
        )
    with handle:
        assert handle.url.startswith("http://127.0.0.1:")
        assert LabelStudioBackend(handle.url, handle.token, classes=CLASSES, annotators_per_task=1).check() is None
    assert any("anyone who can reach this port" in r.getMessage() for r in caplog.records)


@server
@pytest.mark.slow
def test_a_team_server_named_only_in_env_file_through_the_cli(label_studio):
    """Pointing madseg at a server the team already runs (the session's server plays it): the project holds only
    a .env with URL and token; stages run through the CLI reach that server, and nothing of a local server is
    started or written."""
    import os
    import subprocess
    import sys

    import yaml

    from madseg.annotation.server import ADMIN_FILE, write_env_file
    from madseg.io.atomic import read_json
    from tests.test_annotation_simulated import make_tiny_project

    root = label_studio.document_root / f"team-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    cwd = Path.cwd()
    os.chdir(root)
    try:
        ids, _ = make_tiny_project()
    finally:
        os.chdir(cwd)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    prefix = f"team{uuid.uuid4().hex[:6]}"
    params["annotation"]["backend"] = "labelstudio"
    params["annotation"]["labelstudio"]["project_prefix"] = prefix
    params["models"]["input_policy"]["kind"] = "shorter_side"  # the tiny project's pool is of mixed sizes
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy2(ROOT / "dvc.yaml", root / "dvc.yaml")  # the demo world's folders that params name: its outputs
    write_env_file(root / ".env", label_studio.url, label_studio.token)  # all a teammate is given
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}

    def madseg(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "madseg.cli", *args], cwd=root, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
        return done

    said = madseg("run", "export_weak_tasks", "--round", "0").stderr
    receipt = read_json(root / "annotations/round_0/weak_export.json")
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    assert client.projects.get(receipt["project_id"]).title == f"{prefix} round 0 weak"
    tasks = _tasks(client, receipt["project_id"])
    for n, user in enumerate(_users(client, f"{prefix}_")):
        for image in ids:
            _rate(client, tasks[image], user, 1 + n)
    said += madseg("run", "import_scores", "--round", "0").stderr
    assert len((root / "annotations/round_0/scores.csv").read_text().splitlines()) == 1 + 3 * len(ids)
    # nothing of a local server: no data folder, no admin file, no server started
    assert not (root / ".labelstudio").exists() and not list(root.rglob(ADMIN_FILE))
    assert "Label Studio is up" not in said and "Starting development server" not in said
