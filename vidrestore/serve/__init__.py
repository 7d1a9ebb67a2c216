"""`vidrestore serve`: restoration over HTTP, a job queue in SQLite, and a page for browsers.

    app.py       the FastAPI routes (JSON API, progress stream, files, the page)
    db.py        the SQLite job table, its versioned schema and migrations
    uploads.py   streaming an upload to disk with a size limit, and checking its type by probing
    options.py   the options a client may set (names only: never a path or a model file)
    workers.py   the worker threads that run queued jobs through `vidrestore.restore`
    security.py  the bearer token
    logs.py      console and JSON Lines logging of requests and job transitions
    static/      the page: plain HTML, CSS and JavaScript, no build step, no CDN

Needs the `serve` extra: `pip install 'vidrestore[serve]'`.
"""
