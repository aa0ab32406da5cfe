__version__ = "0.4.10-fixture"
