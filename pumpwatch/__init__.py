"""PumpWatch: record every public trade, cut the window around an Upbit KRW listing afterwards."""

__version__ = "0.1.0"
