"""Helpers of bench/run: child processes, contenders, scenarios, report and chart."""
