"""The package's errors: one root, so that a caller stops on every failure the package reports with one
`except EmotionTritonError`, and on one kind of them with its subtree (PyTriton's model).

Every exception class of the package derives from EmotionTritonError (a unit test walks the package);
each keeps the builtin base its callers catch (ValueError, RuntimeError). The message of each is one
line for the user: what cannot be done and what to do about it.

Standard library only and nothing of the package: every layer imports it, and serving/canary.py,
which runs alone in the serving image, derives from it where the package is installed.
"""

from __future__ import annotations


class EmotionTritonError(Exception):
    """Why the package cannot do what was asked, in one line."""


class UsageError(EmotionTritonError, ValueError):
    """Options or input that cannot work, named in one line, refused before the work starts."""
