"""Interactive segmentation in the browser: a local web app over
:class:`label_prop.interactive.session.InteractiveSession` (docs/app.md).

``python -m label_prop.app [--model MODEL] [--root DIR ...]`` serves one page (plain HTML, JS and
CSS from ``static/``, no build step) and a JSON API (:mod:`label_prop.app.server`, on FastAPI and
uvicorn). A person opens a video file, a frame folder or a DAVIS / YouTube-VOS sequence under a
root folder (:mod:`label_prop.app.sources`), scribbles objects and background on any frame,
applies (the session propagates both ways and repaints the frames that changed), corrects,
undoes, and exports palette PNGs, an overlay video and the session as JSON, which the app can
load again to replay it exactly. Sessions live in memory (:mod:`label_prop.app.store`); one
worker thread runs the computation, and the page follows its progress by server-sent events.
"""
