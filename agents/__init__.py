"""Value-learning agents (annotation bootstrapping and its bases); see issue 6."""
