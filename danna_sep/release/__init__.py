"""The original Danna-Sep release: its model files, how to get them, and its weights inside our own models.

::

    registry.py  models.json   what exists: file names, roles, sizes, parameter counts, sources
    download.py                getting the files (resumable, verified, lock file of hashes, offline switch)
    verify.py                  a file is the model it claims to be (loads, I/O contract, parameter count)
    convert.py                 released state dicts → our models (``legacy`` computation), checked, saved
"""
