"""Typed settings for every service and command: one struct, read from flags and ``GPUDRA_*`` variables."""

from libs.settings.common import CommonSettings, ProcessSettings
from libs.settings.loader import SettingsError, env_name, flag_name, load_settings

__all__ = ["CommonSettings", "ProcessSettings", "SettingsError", "env_name", "flag_name", "load_settings"]
