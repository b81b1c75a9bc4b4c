"""Finding the real tools a test runs, and skipping (naming the Debian package)
when one is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def require_tool(path_or_name: str, package: str) -> str:
    """Skip the calling test, naming the Debian package, when a real tool is missing."""
    found = shutil.which(path_or_name) or (path_or_name if Path(path_or_name).exists() else None)
    if not found:
        for prefix in ("/usr/sbin/", "/sbin/"):
            if Path(prefix + path_or_name).exists():
                return prefix + path_or_name
        pytest.skip(f"{path_or_name} not installed (Debian package {package})")
    return found
