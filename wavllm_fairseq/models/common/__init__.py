"""What every model package shares: the checkpoint error, reading checkpoint files, activation
checkpointing. It imports no model package."""
