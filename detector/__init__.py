"""Pump detection over an extracted window (pure), and the refined files it writes."""
