"""The Discord front end: a discord.py bot with application commands built from the bot's command spec."""

from modelbay.adapters.discord.app import DiscordAdapter

__all__ = ["DiscordAdapter"]
