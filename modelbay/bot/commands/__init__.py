"""Built-in commands; importing this package registers them in COMMANDS."""

from modelbay.bot.commands import help, jobs, models, system

__all__ = ["help", "jobs", "models", "system"]
