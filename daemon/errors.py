# SPDX-License-Identifier: Apache-2.0
"""The daemon's own exceptions; server.py maps each to one gRPC status, once."""


class DaemonError(Exception):
    """Base class: anything the daemon reports to a client as a failed request."""


class ModelNotReady(DaemonError):
    """The model is still being pulled or loaded (UNAVAILABLE, retry later)."""


class ModelLoadError(DaemonError):
    """The model could not be loaded (FAILED_PRECONDITION: a person must act)."""


class Overloaded(DaemonError):
    """Too many requests in flight (RESOURCE_EXHAUSTED)."""
