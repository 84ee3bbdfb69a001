"""Explanations that work through any detector's served prediction path."""
