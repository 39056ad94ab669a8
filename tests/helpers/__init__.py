"""Builders the tests share: stores (stores.py), SAE files (saes.py), served processes (server.py), a browser
(browser.py), a clock moved by hand and a wait for a condition (timing.py), the app in-process on a
TestClient (apps.py). Test modules import from here, never from each other."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout
