"""``maskformer serve``: a local web page and a JSON API around one ``Predictor`` (``app.build_app``).

May import: ``inference`` and ``errors``; the CLI (``cli/serve.py``) loads the model and starts uvicorn.
"""
