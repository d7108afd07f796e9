"""Built-in commands; importing this package registers them in COMMANDS."""

from modelbay.bot.commands import analytics, chat, help, jobs, models, privacy, system, uploads

__all__ = ["analytics", "chat", "help", "jobs", "models", "privacy", "system", "uploads"]
