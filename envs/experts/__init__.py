"""Experts for every task: scripted controllers (reach, push, Fetch) and SB3 weights (locomotion)."""

from envs.experts.base import Expert

__all__ = ["Expert"]
