"""Expected stops: the pipeline halts for a reason the user acts on, not because of a bug.

`madseg` prints their message (no traceback) and exits with their own code, so scripts and CI can tell them apart:

====  =========================================================================================
 3    the answers are incomplete (:class:`madseg.annotation.tasks.AnnotationIncomplete`)
 4    the annotation server cannot be reached or answers with an error
 5    no server address or token is configured
 6    fewer annotator accounts than ``annotation.annotators_per_task``
====  =========================================================================================
"""

from __future__ import annotations


class ExpectedStop(Exception):
    """Base of the stops a user resolves (annotate, start the server, set a token); ``exit_code`` says which."""

    exit_code = 2


class AnswersIncomplete(ExpectedStop):
    exit_code = 3


class ServerUnavailable(ExpectedStop):
    exit_code = 4


class NoCredentials(ServerUnavailable):
    exit_code = 5


class TooFewAnnotators(ExpectedStop):
    exit_code = 6
