"""The bundled plugins. Each registers through the `cdp` entry-point group in pyproject.toml,
exactly as a vendor's plugin does; the core never imports them."""
