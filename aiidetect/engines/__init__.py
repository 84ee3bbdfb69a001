"""Execution engines beyond the local one (imported only when asked for)."""
