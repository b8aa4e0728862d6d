"""The package version, on its own: modules read it without importing the package's face (lyricdist/__init__)."""

__version__ = "0.1.0"
