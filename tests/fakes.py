"""Small stand-ins shared by several test modules (not tests themselves)."""

from __future__ import annotations


class RecordingStream:
    """A stream whose start() records the argv the agent's CommandStream would run."""

    def __init__(self, template: str):
        from edge.agent import CommandStream

        self.cmd = CommandStream(template)
        self.runs: list[list[str]] = []
        self.running = False

    def start(self, params):
        self.runs.append(self.cmd.argv_for(params))
        self.running = True

    def stop(self):
        self.running = False
