"""``host-calibrate dashboard``: a live web view of every device of a system, served by the
host (aiohttp, server-sent events). ``sources.py`` gathers what a device reports over its
serial link; ``app.py`` serves the page (``index.html``), the stream and the actions."""
