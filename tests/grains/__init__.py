"""Grain types used by the test suite (loaded by silo processes via --grains)."""
