"""dispatch: newsletter composition and delivery."""

__version__ = "0.1.0"
