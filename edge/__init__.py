"""hushlink on-device runtime: audio I/O, the shared STFT front end, int8 inference,
clock discipline, transport and the serial agent.

This package must install and import on a Raspberry Pi with only the ``edge`` extra:
it never imports torch, scikit-learn, ``host`` or ``training``.
"""

__version__ = "0.1.0"
