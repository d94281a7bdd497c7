"""Errors of the registry operations (a gate rejection is not one: it is a decision)."""

from __future__ import annotations


class RegistryError(RuntimeError):
    """A registry operation could not be carried out; aliases are as they were."""


class RegistryConfigError(RegistryError):
    """The configuration does not allow the operation (e.g. no database behind the registry)."""


class RegistryUnavailable(RegistryError):
    """The registry's database cannot be reached."""


class RegistryLockTimeout(RegistryError):
    """Another alias move held the registry lock for too long."""


class RegistryNotFound(RegistryError, LookupError):
    """The registered model, version or alias does not exist."""
