# SPDX-License-Identifier: Apache-2.0
"""Fetch a GGUF file from the Hugging Face Hub, when the Hub can be reached.

``hf_hub_download`` retries an unreachable host for about 25 seconds before giving up, which
would stall every pull on machines that only reach a package index. So a single HEAD request
with a short timeout decides first whether the Hub is there at all; ``HF_HUB_OFFLINE=1`` skips
it outright. The bytes are verified against the registry's sha256 by the caller, as for every
other source.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import DownloadError
from .registry import HubSource

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0


def hub_endpoint() -> str:
    try:
        from huggingface_hub import constants
    except ImportError:
        return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True if the Hub answers HTTP at all (any status), within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    request = urllib.request.Request(hub_endpoint(), method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # an HTTP answer, even an error status, means the host is there
    except (urllib.error.URLError, OSError) as error:
        logger.info("Hugging Face Hub not reachable at %s: %s", hub_endpoint(), error)
        return False


def hub_download(
    source: HubSource, dest: Path, *, progress: Callable[[str, int, int], None] | None = None
) -> Path:
    """Download ``source`` into ``dest`` (not the shared HF cache: we keep only the conversion)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:
        raise DownloadError(f"huggingface_hub is not installed: {error}") from error
    if not hub_reachable():
        raise DownloadError(f"Hugging Face Hub not reachable at {hub_endpoint()}")
    try:
        path = hf_hub_download(
            source.repo_id,
            source.filename,
            revision=source.revision,
            local_dir=dest,
            tqdm_class=_forwarding_tqdm(progress) if progress else None,
        )
    except Exception as error:  # huggingface_hub raises many unrelated types for one failure
        raise DownloadError(
            f"hub {source.repo_id}/{source.filename}@{source.revision}: {error}"
        ) from error
    return Path(path)


def _forwarding_tqdm(progress: Callable[[str, int, int], None]) -> type:
    """A silent tqdm class that reports its byte counts as our "download" stage."""
    from tqdm.auto import tqdm

    class ForwardingTqdm(tqdm):  # type: ignore[misc]
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done_bytes = int(kwargs.get("initial", 0) or 0)  # type: ignore[call-overload]
            self.total_bytes = int(kwargs.get("total", 0) or 0)  # type: ignore[call-overload]

        def update(self, n: float | None = 1) -> bool | None:
            self.done_bytes += int(n or 0)
            progress("download", self.done_bytes, max(self.total_bytes, self.done_bytes))
            return super().update(n)

    return ForwardingTqdm
