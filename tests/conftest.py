"""A real Label Studio server for the whole test session (tests marked ``labelstudio`` use it).

The server executable comes from env MADSEG_LABEL_STUDIO (``make test`` sets it) or the project's own
.venv-labelstudio. Its first start migrates a template data folder under the temp dir (~30 s, once per
machine); every session then copies it and is up in ~3 s on a free port of 127.0.0.1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# `make test` runs the suite on several workers (pytest-xdist, --dist loadgroup). The session fixtures that cost
# minutes or start servers are built once per run: every test that uses one runs on the same worker. (pytest 9
# ignores these groups with pytest-xdist 3.8, hence pyproject's pytest<9.)
SHARED_FIXTURES = ("tiny_project", "label_studio", "cluster")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        shared = [name for name in SHARED_FIXTURES if name in getattr(item, "fixturenames", ())]
        if len(shared) > 1:
            raise pytest.UsageError(f"{item.nodeid} uses {shared}: a test may need one shared fixture at most")
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))


def label_studio_executable() -> Path:
    return Path(os.environ.get("MADSEG_LABEL_STUDIO") or ROOT / ".venv-labelstudio" / "bin" / "label-studio")


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A running server: ``.url``, ``.token`` and ``.document_root`` (the folder it serves files from)."""
    from madseg.annotation.server import add_annotators, shared_template_dir, start_server, stop_server

    exe = label_studio_executable()
    if not exe.exists():
        pytest.skip(
            f"no Label Studio server executable at {exe}: run `make .venv-labelstudio/.installed` or set "
            "MADSEG_LABEL_STUDIO (`make test` does both)"
        )
    template = shared_template_dir(exe)  # one per server install: another label-studio never reuses its DB
    root = tmp_path_factory.mktemp("labelstudio")
    document_root = root / "files"
    document_root.mkdir()
    handle = start_server(exe, root / "data", document_root=document_root, template_dir=template)
    add_annotators(handle.url, handle.token, [f"rater{k}@team.test" for k in range(3)])  # a team, as in the field
    yield handle
    stop_server(handle)


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Path:
    """The whole pipeline reproduced once (`dvc repro`) on the tiny configuration in a scratch repo."""
    from tests.project import make_tiny_project

    return make_tiny_project(tmp_path_factory.mktemp("e2e") / "project")
