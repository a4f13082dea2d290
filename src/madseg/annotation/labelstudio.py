"""The Label Studio backend: projects, tasks and exports through label-studio-sdk 2.x against a real server.

* Projects are found by title and created or updated in place; tasks are matched by ``data.image_id``, so
  re-running an export never duplicates a project or a task (answers already given are kept).
* Images are served by the server's local-files storage: the task URL is ``/data/local-files/?d=<path relative
  to the document root>`` and the project gets a local storage on the folder that holds them (never synced:
  tasks are imported by us, one per image, in batches).
* An import exports the whole project (with predictions in full), keeps the tasks of the receipt, checks that
  each has its annotations and parses them; the raw export is the snapshot.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from madseg.labels import ClassList
from madseg.stops import NoCredentials, ServerUnavailable, TooFewAnnotators

from .brush import mask_to_results
from .tasks import (
    PIXEL_INSTRUCTIONS,
    WEAK_INSTRUCTIONS,
    AnnotationIncomplete,
    check_receipt,
    index_tasks,
    local_file_url,
    parse_pixel,
    parse_weak,
    pixel_label_config,
    pixel_task,
    progress,
    weak_label_config,
    weak_task,
)

log = logging.getLogger(__name__)


class AnnotationServerError(ServerUnavailable):
    """Label Studio cannot be reached, refuses the token, or answers a request with an error."""


class NoServerAddress(AnnotationServerError, NoCredentials):
    """Neither the environment nor the env file names a server and a token."""


def read_env_file(path: str | Path) -> dict[str, str]:
    """KEY=VALUE lines of a ``.env`` file (blank lines and # comments skipped); {} if it does not exist."""
    path = Path(path)
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip().strip("'\"")
    return out


def server_address(env_file: str | Path, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(url, token) from LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY in the environment, else ``env_file``."""
    environ = os.environ if environ is None else environ
    from_file = read_env_file(env_file)
    url = environ.get("LABEL_STUDIO_URL") or from_file.get("LABEL_STUDIO_URL")
    token = environ.get("LABEL_STUDIO_API_KEY") or from_file.get("LABEL_STUDIO_API_KEY")
    if not url or not token:
        raise NoServerAddress(
            f"no Label Studio address: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, or start a server with "
            f"`make labelstudio` (it writes them to {env_file}); or set annotation.backend: simulated"
        )
    return url.rstrip("/"), token


class LabelStudioBackend:
    """Annotation backend on a real Label Studio server (see the module docstring)."""

    name = "labelstudio"
    wants_preannotations = True

    def __init__(
        self,
        url: str,
        token: str,
        *,
        classes: ClassList,
        annotators_per_task: int,
        project_prefix: str = "madseg",
        batch_size: int = 500,
        document_root: str | Path = ".",
        timeout_s: float = 120.0,
    ):
        self.url = url.rstrip("/")
        self.classes = classes
        self.annotators_per_task = annotators_per_task
        self.prefix = project_prefix
        self.batch_size = batch_size
        self.document_root = Path(document_root).resolve()
        self.timeout_s = timeout_s
        self.client = LabelStudio(base_url=self.url, api_key=token, timeout=timeout_s)
        self._checked = False

    # ---------------------------------------------------------------------------------- server plumbing
    def check(self) -> None:
        """Raise AnnotationServerError with a hint if the server is down or refuses the token."""
        if self._checked:
            return
        try:
            httpx.get(f"{self.url}/health", timeout=10.0).raise_for_status()
        except httpx.HTTPError as e:
            raise AnnotationServerError(
                f"cannot reach Label Studio at {self.url} ({type(e).__name__}: {e}); start it with "
                "`make labelstudio`, or point LABEL_STUDIO_URL at a running server"
            ) from None
        try:
            self.client.projects.list(page_size=1)
        except ApiError as e:
            raise AnnotationServerError(
                f"Label Studio at {self.url} refused the API token (HTTP {e.status_code}: {e.body}); "
                "check LABEL_STUDIO_API_KEY (a legacy token) in the environment or .env"
            ) from None
        self._checked = True

    def title(self, round_key: str, kind: str) -> str:
        return f"{self.prefix} round {round_key} {kind}"

    def project_url(self, project_id: int) -> str:
        return f"{self.url}/projects/{project_id}/data"

    def ensure_project(self, title: str, label_config: str, instructions: str, maximum_annotations: int) -> int:
        """The id of the project called ``title``, created or updated (config, instructions, quota)."""
        self.check()
        found = [p for p in self.client.projects.list(title=title) if p.title == title]
        if len(found) > 1:
            raise AnnotationServerError(
                f"{len(found)} projects are called {title!r} ({[p.id for p in found]}); delete the extra ones"
            )
        settings = {
            "label_config": label_config,
            "expert_instruction": instructions,
            "show_instruction": True,
            "maximum_annotations": maximum_annotations,
        }
        if not found:
            project = self.client.projects.create(title=title, show_collab_predictions=True, **settings)
            log.info("created Label Studio project %r (id %d)", title, project.id)
            return int(project.id)
        project = self.client.projects.get(found[0].id)
        changed = {k: v for k, v in settings.items() if getattr(project, k, None) != v}
        if changed:
            try:
                self.client.projects.update(project.id, **changed)
            except ApiError as e:
                raise AnnotationServerError(f"cannot update project {title!r}: HTTP {e.status_code} {e.body}") from None
            log.info("updated %s of Label Studio project %r (id %d)", sorted(changed), title, project.id)
        return int(project.id)

    def _relative(self, path: str | Path) -> str:
        full = Path(path).resolve()
        try:
            return full.relative_to(self.document_root).as_posix()
        except ValueError:
            raise ValueError(
                f"{full} lies outside Label Studio's document root {self.document_root}; local files can "
                "only be served from inside it"
            ) from None

    def ensure_storage(self, project_id: int, files: Sequence[str | Path]) -> None:
        """A local-files storage on the folder holding ``files``, so the server serves them (never synced)."""
        folder = Path(os.path.commonpath([Path(f).resolve().parent for f in files]))
        if folder == self.document_root:
            raise ValueError(
                f"the files to serve lie directly in the document root {folder}; Label Studio refuses a "
                "storage on the root itself: keep them in a subfolder"
            )
        self._relative(folder)
        existing = self.client.import_storage.local.list(project=project_id)
        if any(Path(s.path or "") == folder for s in existing):
            return
        self.client.import_storage.local.create(
            project=project_id, path=str(folder), use_blob_urls=True, title=f"madseg {folder.name}"
        )

    def export_tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project in Label Studio's JSON format, with annotations and whole predictions."""
        self.check()
        export = self.client.projects.exports.create(
            project_id,
            serialization_options={"predictions": {"only_id": False}},
            task_filter_options={"only_with_annotations": False},
        )
        deadline = time.monotonic() + self.timeout_s
        while export.status != "completed":
            if export.status == "failed" or time.monotonic() > deadline:
                raise AnnotationServerError(f"export {export.id} of project {project_id} ended as {export.status}")
            time.sleep(0.2)
            export = self.client.projects.exports.get(project_id, export.id)
        data = b"".join(self.client.projects.exports.download(project_id, export.id, export_type="JSON"))
        self.client.projects.exports.delete(project_id, export.id)  # do not pile export files up on the server
        tasks = json.loads(data)
        return sorted(tasks, key=lambda t: t["id"])

    def _sync_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> int:
        """Import the tasks whose image is not in the project yet (batched); drop unannotated stale ones."""
        existing = {}
        for t in self.export_tasks(project_id):
            existing.setdefault((t.get("data") or {}).get("image_id"), []).append(t)
        wanted = {t["data"]["image_id"] for t in tasks}
        for image, held in existing.items():
            if image not in wanted:
                for t in held:
                    if t.get("annotations"):
                        log.warning("task %d (image %s) is no longer requested but has answers: kept", t["id"], image)
                    else:
                        self.client.tasks.delete(str(t["id"]))
        new = [t for t in tasks if t["data"]["image_id"] not in existing]
        for start in range(0, len(new), self.batch_size):
            batch = new[start : start + self.batch_size]
            self.client.projects.import_tasks(project_id, request=batch, return_task_ids=True)
        log.info("project %d: %d tasks requested, %d new", project_id, len(tasks), len(new))
        return len(new)

    def check_annotators(self) -> None:
        """TooFewAnnotators when fewer accounts exist than each rating task needs (it could never be finished)."""
        self.check()
        users = self._users()
        if len(users) < self.annotators_per_task:
            raise TooFewAnnotators(
                f"annotation.annotators_per_task is {self.annotators_per_task}, but Label Studio at {self.url} has "
                f"{len(users)} account(s) ({', '.join(sorted(users.values()))}): every rating task needs that many "
                "different people. Add them to annotation.labelstudio.users and restart `make labelstudio` (it "
                "creates their accounts and prints the invite link they set a password with), or lower "
                "annotators_per_task"
            )

    def _users(self) -> dict[int, str]:
        return {int(u.id): str(u.email or u.username or f"user{u.id}") for u in self.client.users.list()}

    def _project_tasks(self, receipt: Mapping[str, Any], stage: str) -> tuple[dict[str, dict], list[dict]]:
        check_receipt(receipt, self.name, "weak" if stage == "import_scores" else "pixel")
        pid, title = int(receipt["project_id"]), receipt["project_title"]
        self.check()
        try:
            project = self.client.projects.get(pid)
        except ApiError:
            raise AnnotationServerError(
                f"project {pid} ({title!r}) is not on {self.url}; re-run the export stage"
            ) from None
        if project.title != title:
            raise AnnotationServerError(f"project {pid} is now called {project.title!r}, expected {title!r}")
        ids = [r["image_id"] if isinstance(r, dict) else r for r in receipt["images"]]
        by_id = index_tasks(self.export_tasks(pid), ids)
        required = int(receipt["annotations_per_task"])
        state = progress(by_id, required)
        if state.remaining:
            links = [f"  {i}: {self.url}/projects/{pid}/data?task={by_id[i]['id']}" for i in state.pending[:5]]
            more = f"\n  ... and {state.remaining - 5} more" if state.remaining > 5 else ""
            raise AnnotationIncomplete(
                f"{title}: {state.done} of {state.total} tasks have their {required} annotation(s), "
                f"{state.remaining} remain. Annotate at {self.project_url(pid)}, then run "
                f"`madseg pull --round {receipt['round']}`. Waiting for:\n" + "\n".join(links) + more,
                remaining=state.remaining,
                url=self.project_url(pid),
                pending=state.pending,
            )
        return by_id, [by_id[i] for i in sorted(by_id)]

    def _receipt(self, round_key: str, kind: str, pid: int, title: str, images: list, per_task: int) -> dict:
        return {
            "backend": self.name,
            "kind": kind,
            "round": round_key,
            "project_id": pid,
            "project_title": title,
            "task_count": len(images),
            "annotations_per_task": per_task,
            "images": images,
        }

    # --------------------------------------------------------------------------------------- the interface
    def export_weak(self, round_key: str, items: pd.DataFrame) -> dict[str, Any]:
        """Rating tasks for ``items`` (columns image_id, path: the rater overlay, image | prediction)."""
        items = items.sort_values("image_id")
        title = self.title(round_key, "weak")
        self.check_annotators()
        pid = self.ensure_project(title, weak_label_config(), WEAK_INSTRUCTIONS, self.annotators_per_task)
        if len(items):
            self.ensure_storage(pid, items["path"].tolist())
        tasks = [
            weak_task(i, local_file_url(self._relative(p)), round_key)
            for i, p in zip(items["image_id"], items["path"], strict=True)
        ]
        self._sync_tasks(pid, tasks)
        return self._receipt(round_key, "weak", pid, title, items["image_id"].tolist(), self.annotators_per_task)

    def import_weak(self, receipt: Mapping[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
        by_id, raw_tasks = self._project_tasks(receipt, "import_scores")
        users = self._users()
        table = parse_weak(by_id, users)
        raw = {"backend": self.name, "receipt": dict(receipt), "annotators": users, "tasks": raw_tasks}
        return raw, table

    def export_pixel(
        self, round_key: str, items: pd.DataFrame, preannotations: Mapping[str, np.ndarray]
    ) -> dict[str, Any]:
        """Brush tasks for ``items`` (image_id, role, path, height, width); S-only images start from
        ``preannotations[image_id]`` ((H, W) uint8), T and both start empty."""
        items = items.sort_values("image_id")
        title = self.title(round_key, "pixel")
        pid = self.ensure_project(title, pixel_label_config(self.classes), PIXEL_INSTRUCTIONS, 1)
        if len(items):
            self.ensure_storage(pid, items["path"].tolist())
        tasks = []
        for row in items.itertuples(index=False):
            pre = None
            if row.role == "S":
                mask = preannotations[row.image_id]
                if mask.shape != (row.height, row.width):
                    raise ValueError(
                        f"pre-annotation of {row.image_id} is {mask.shape}, image is {row.height}x{row.width}"
                    )
                pre = mask_to_results(mask, self.classes)
            url = local_file_url(self._relative(row.path))
            tasks.append(pixel_task(row.image_id, url, round_key, row.role, pre, f"target_{round_key}"))
        self._sync_tasks(pid, tasks)
        images = [
            {"image_id": r.image_id, "role": r.role, "height": int(r.height), "width": int(r.width)}
            for r in items.itertuples(index=False)
        ]
        return self._receipt(round_key, "pixel", pid, title, images, 1)

    def import_pixel(self, receipt: Mapping[str, Any]) -> tuple[dict[str, Any], pd.DataFrame, dict[str, np.ndarray]]:
        by_id, raw_tasks = self._project_tasks(receipt, "import_masks")
        roles = {r["image_id"]: r["role"] for r in receipt["images"]}
        sizes = {r["image_id"]: (int(r["height"]), int(r["width"])) for r in receipt["images"]}
        users = self._users()
        table, masks = parse_pixel(by_id, roles, sizes, self.classes, users)
        raw = {"backend": self.name, "receipt": dict(receipt), "annotators": users, "tasks": raw_tasks}
        return raw, table, masks
