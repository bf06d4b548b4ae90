"""The dashboard and JSON API (FastAPI), run by the daemon in a child process, never in the engine's.

Importing this package imports nothing heavy: the CLI uses `engine.web.users` without FastAPI.
"""
