"""Example grains and the demo."""
