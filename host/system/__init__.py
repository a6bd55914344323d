"""``host-calibrate system up|down|status|impair``: a host and N simulated devices on one
machine, each device in its own network namespace running the real device processes.

``netns.py`` (namespaces, the bridge, link impairment), ``pulse.py`` (a private PulseAudio
null sink per device and the recording it plays), ``procs.py`` (processes and the JSON
manifest that lets ``down`` and ``status`` work from another process), ``stack.py`` (what
runs where: bring-up, health checks, teardown). docs/system.md has the picture.
"""
