"""Built-in commands; importing this package registers them in COMMANDS."""

from modelbay.bot.commands import (
    analytics,
    arena,
    chat,
    datasets,
    experiments,
    help,
    jobs,
    models,
    optimize,
    privacy,
    system,
    train,
)

__all__ = ["analytics", "arena", "chat", "datasets", "experiments", "help", "jobs", "models", "optimize", "privacy",
           "system", "train"]
