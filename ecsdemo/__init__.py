"""ecsdemo: HashiCorp's Nomad ECS remote task driver demo as one command-line tool."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ecsdemo")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
