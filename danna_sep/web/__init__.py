"""``danna serve``: a local web page that separates songs with the same :class:`~danna_sep.separate.Separator`.

::

    browser ── POST the file ──→ app.py ─ uploads.py: streamed to disk (capped), recognised by content
       ↑                            │
       │  server-sent events        └─→ jobs.py: JobQueue, one worker thread, one job at a time
       │  (progress, queue place)         Separator.separate_to_files → stems, mixture, plots.spectrogram_png
       └── <audio> per stem, pictures, downloads, zip ←── app.py serves a finished job's files

The page itself (``static/``: one HTML file, a small script, a style sheet) needs no build step and loads nothing
from elsewhere. Needs the ``web`` extra: ``pip install 'danna-sep[web]'`` (Starlette, uvicorn, matplotlib).
"""

WEB_EXTRA = "pip install 'danna-sep[web]'"
