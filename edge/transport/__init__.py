"""Audio transport (SPEC §6): RTP/Opus over UDP or TCP (RFC 4571), a jitter buffer with
Opus FEC/PLC, and per-second link telemetry sent back to the sender.

Pure parts: ``rtp`` (packet format), ``jitter`` (playout logic), ``stats`` (link math).
I/O parts: ``codec`` (libopus), ``sender``, ``receiver``, ``telemetry`` (JSON-lines log).
"""
