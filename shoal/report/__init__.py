"""Run reports: the HTML page with plots, and the live progress bar."""

from shoal.report.html import render
from shoal.report.progress import RoundProgress

__all__ = ["RoundProgress", "render"]
