"""What tests and benchmarks share to run the real Claude Code CLI with no model: the stand-in Messages API."""
