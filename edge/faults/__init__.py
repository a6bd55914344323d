"""Background audio fault monitor and digital mixer (SPEC §8).

``features`` (log-mel on the shared STFT) → ``detect`` (int8 BiGRU classifier, blocks) →
``events`` (hysteresis endpoints) → ``measure`` (fault parameters) → ``strategies.toml``
(fault → mixer adjustments) → ``mixer`` (click-free channel strip) ; ``cli`` ties them up.
"""

FAULT_TYPES = ("hum", "clipping", "hiss", "dropout", "dc", "rumble", "howl")
"""The classifier's output classes, in output order. "clean" is none of them active."""
