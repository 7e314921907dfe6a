"""The chaos suite: mixed faults under load, then the guarantees checked op by op."""
