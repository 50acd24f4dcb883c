"""Settings for every test: offline, no telemetry, and a state folder per session
(nothing is written into the checkout's .ech0 or the user's cache)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
