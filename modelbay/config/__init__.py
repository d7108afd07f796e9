"""Settings and the shipped data (default catalog)."""

from modelbay.config.settings import ROLES, Settings, SettingsError, load_settings

__all__ = ["ROLES", "Settings", "SettingsError", "load_settings"]
