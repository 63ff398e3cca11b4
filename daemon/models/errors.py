# SPDX-License-Identifier: Apache-2.0
"""Errors raised while finding, fetching, verifying and converting a model.

One small hierarchy so the CLI and the daemon map every failure once at their edge (an exit code
and one line of text; a gRPC status) instead of catching whatever pip, zipfile or transformers
happen to raise. Every message names what failed and, for integrity errors, expected vs got.
"""

from __future__ import annotations


class ModelError(Exception):
    """Base class: anything that stops a model from becoming ready."""


class RegistryError(ModelError):
    """The registry file is malformed, or names a model it does not define."""


class UnknownModelError(RegistryError):
    """A name is neither in the registry nor an existing local path."""


class DownloadError(ModelError):
    """Every source for a model failed to deliver its bytes."""


class IntegrityError(ModelError):
    """Bytes arrived but are not the pinned ones (size or sha256 mismatch, missing member)."""


class ConversionError(ModelError):
    """The GGUF file verified but could not be turned into a safetensors model directory."""
