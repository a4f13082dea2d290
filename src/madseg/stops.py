"""Expected stops: the pipeline halts for a reason the user acts on, not because of a bug.

`madseg` prints their message (no traceback; ``--debug`` or ``MADSEG_DEBUG=1`` shows it) and exits with their own
code, so scripts and CI can tell them apart:

====  =========================================================================================
 2    params or command line: `madseg check` lists every problem (:class:`ConfigError`)
 3    the answers are incomplete (:class:`AnswersIncomplete`)
 4    the annotation server cannot be reached or answers with an error
 5    no server address or token is configured
 6    fewer annotator accounts than ``annotation.annotators_per_task``
 7    dvc.yaml lacks data that params.yaml names: run `madseg dvc-deps`
 8    the Ray cluster cannot be reached
 9    bad input data: a corrupt image, a wrong shape, an unknown class, a missing file (:class:`BadInput`)
====  =========================================================================================

This module imports nothing of madseg: every layer may raise these.
"""

from __future__ import annotations


class ExpectedStop(Exception):
    """Base of the stops a user resolves (annotate, start the server, set a token); ``exit_code`` says which."""

    exit_code = 2


class ConfigError(ExpectedStop, ValueError):
    """params.yaml or the command line is wrong; the message holds one ``key.path: problem — remedy`` a line."""

    exit_code = 2


class AnswersIncomplete(ExpectedStop):
    exit_code = 3


class ServerUnavailable(ExpectedStop):
    exit_code = 4


class NoCredentials(ServerUnavailable):
    exit_code = 5


class TooFewAnnotators(ExpectedStop):
    exit_code = 6


class PipelineOutOfDate(ExpectedStop):
    """dvc.yaml does not declare data that params.yaml names (run `madseg dvc-deps`)."""

    exit_code = 7


class ClusterUnreachable(ExpectedStop):
    """The Ray cluster named by ``ray.address`` / $RAY_ADDRESS does not answer."""

    exit_code = 8


class BadInput(ExpectedStop, ValueError):
    """Input data madseg cannot use: a corrupt image, a wrong shape, an unknown class, a missing file."""

    exit_code = 9


class StagesNotRun(ExpectedStop):
    """Stages of a repro did not run to the end; the exit code is the first failed stage's own (3: people must
    answer), or 1 when it was no expected stop."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code if 2 <= exit_code <= 9 else 1
