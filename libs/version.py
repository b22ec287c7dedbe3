"""The installed gpudra version, advertised by every service in ``$SRV.INFO``."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("gpudra")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0"
