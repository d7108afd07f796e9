"""The Slack front end: a slack-bolt app over HTTP (`/slack/events` of `modelbay api`) or Socket Mode."""

from modelbay.adapters.slack.app import SlackAdapter, Where

__all__ = ["SlackAdapter", "Where"]
