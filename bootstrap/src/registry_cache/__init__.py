"""registry-cache: the agent that turns config.yml into running pull-through mirrors."""

__version__ = "0.1.0"
