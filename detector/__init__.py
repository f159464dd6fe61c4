"""Pump detection over an extracted window (pure), and the refined files it writes."""

from pumpwatch.detector.detect import analyse, detect
from pumpwatch.detector.refined import run_detector, write_refined

__all__ = ["analyse", "detect", "run_detector", "write_refined"]
