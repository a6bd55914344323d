"""hushlink host tools: calibration over the serial link and signed bundle flashing.

May import ``edge`` (the shared protocol, audio and front end); never the reverse.
"""
