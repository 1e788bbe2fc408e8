"""``feedalign serve``: a small web app that collects thumbs and A/B comparisons per objective
from people, stored in SQLite (a file) or PostgreSQL (a URL).

``storage`` (the database), ``validation`` (what the server accepts), ``app`` (routes and
server), ``page`` (the HTML page), ``items`` (items from a JSONL file or sampled from a
model). Importing this package is light; Flask, SQLAlchemy and waitress load when used.
"""
