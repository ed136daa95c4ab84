"""One family for errors a user causes and can fix (a wrong path, an unknown name, a corrupt index).

The CLI prints a `UserError` as one line (`copyscope CMD: error: ...`, exit 1) and lets every other
exception keep its traceback, so a bug in numpy, torch or Ray is never mistaken for bad input.
It subclasses ValueError, so code that caught ValueError before keeps working. It lives in
descriptors, the base layer, so that matching, pipeline and jobs can all raise it.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input or configuration: the message says what is wrong and, where it can, what to do."""
