"""The server's scripts: one runner Supervisor per stream with a command, wired to the
hub's publish, on exactly one node (see `manager.py`)."""

from .manager import ScriptManager
from .reconciler import Action
from .running import SetEnabled, script_spec

__all__ = ["Action", "ScriptManager", "SetEnabled", "script_spec"]
