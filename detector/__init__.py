"""Pump detection over an extracted window: the rule (pure), the pump_analysis.json report
(pure), and the refined files written from them."""

from pumpwatch.detector.analysis import Analysis, analyse
from pumpwatch.detector.refined import run_detector, write_refined

__all__ = ["Analysis", "analyse", "run_detector", "write_refined"]
