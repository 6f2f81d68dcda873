"""charassets: character records in, clean per-character attribute tables out."""

__version__ = "0.1.0"
