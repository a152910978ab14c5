"""A tiny existing Flask-AppBuilder application that adds puqpanel as a plugin (see app.py)."""
