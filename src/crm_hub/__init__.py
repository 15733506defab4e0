"""crm_hub: connects a product's teams to their CRMs over gRPC."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crm-hub")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
