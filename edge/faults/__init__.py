"""Background audio fault monitor and digital mixer (SPEC §8).

``features`` (log-mel on the shared STFT) → ``detect`` (int8 BiGRU classifier, blocks) →
``events`` (hysteresis endpoints) → ``measure`` (fault parameters) → ``strategies.toml``
(fault → mixer adjustments) → ``mixer`` (click-free channel strip) ; ``cli`` ties them up.
``precheck`` is the coarse stage a detected span must pass first; ``repair`` fixes dropouts and
clipping sample by sample on a live capture; ``live`` runs it all inside ``edge-denoise live``.
"""

FAULT_TYPES = ("hum", "clipping", "hiss", "dropout", "dc", "rumble", "howl")
"""The classifier's output classes, in output order. "clean" is none of them active."""
