"""Deploy backends: how agents run (``local`` processes or ``nixos-container`` containers)."""

from .base import Backend, BuildError

__all__ = ["Backend", "BuildError"]
