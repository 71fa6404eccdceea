"""vrec: offline batch recommendations for catalogs where the image matters."""

__version__ = "0.1.0"
