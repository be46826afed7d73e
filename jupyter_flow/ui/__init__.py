"""Views of runs: terminal tables and live progress (rich), notebook widgets (ipywidgets)."""
