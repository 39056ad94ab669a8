"""The served model and all that runs it on a user's text: the runner (runner.py: load once, run bounded and
serialised), the inspect views (inspect.py) and search by firing (fires.py)."""
