"""The error for a model that cannot be used, shared by the runtimes that load one (lenet.inference,
lenet.native): the commands print it as it is, in one line."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, remote, unreadable, or not a network of this project."""
