"""Script supervision: run a stream's command, turn its output into messages, restart
it per policy. Depends on nothing of bloomr but `bloomr.model`; the server wires a
`Supervisor` per stream to its publish function.

    supervisor = Supervisor(stream_id, ScriptSpec(["python", "job.py"]), publish)
    await supervisor.start()
    supervisor.status().to_json()  # {"state": "running", "pid": ..., ...}
    await supervisor.close()
"""

from .spec import NEVER_RAN, Publish, ScriptError, ScriptReport, ScriptSpec, ScriptStatus
from .supervisor import Supervisor

__all__ = [
    "NEVER_RAN",
    "Publish",
    "ScriptError",
    "ScriptReport",
    "ScriptSpec",
    "ScriptStatus",
    "Supervisor",
]
