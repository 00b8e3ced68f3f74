"""dopr-robot: behavior cloning with the DoPr optimizer, and closed-loop evaluation."""

__version__ = "0.1.0"
