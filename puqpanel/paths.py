"""Where the packaged migrations and translations live (top-level folders of the repository)."""
import os

import puqpanel.migrations
import puqpanel.translations

MIGRATIONS_DIR = os.path.dirname(os.path.abspath(puqpanel.migrations.__file__))
TRANSLATIONS_DIR = os.path.dirname(os.path.abspath(puqpanel.translations.__file__))
