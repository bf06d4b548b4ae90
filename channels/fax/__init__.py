"""Fax drop folders: a fax server writes files into an inbox; the engine claims, reads and files them.

`FaxFolderChannel` (watcher.py) watches the inbox, `worker.py` runs the OCR pipeline in
a worker process, `engine.fax_intake` turns the result into a referral or a review item.
"""
