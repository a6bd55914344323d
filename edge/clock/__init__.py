"""PTP-disciplined clocks (SPEC §5): linuxptp configs, supervision and monitoring, the pure
delay/offset/drift math, and the audio media clock that keeps a sound card on PTP time.

linuxptp (ptp4l, phc2sys, pmc) does the protocol; this package does what an audio device needs
around it. Modules: ``ptpmath`` (pure math), ``config`` (ptp4l/phc2sys configs, run dirs),
``supervisor`` (child processes with restart), ``monitor`` (pmc polling, lock state),
``mediaclock`` (block stamps, rate estimate, adaptive resampler, RTP timestamps), ``cli``.
"""
