"""The shared store of a deployment of several processes (Redis): sessions, the guessing limit.

One process needs none of this: sessions and the guessing limit live in its
memory. Several gunicorn workers, or several hosts, share them through one
Redis named by `--session-store redis://HOST:PORT/DB` (DESIGN.md, Many
processes). Nothing here is imported, and the `redis` client is never loaded,
unless a store is configured: the one-process path pays nothing for it.
"""
