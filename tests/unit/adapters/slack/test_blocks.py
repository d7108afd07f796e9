"""adapters/slack/blocks.py: Slack's mrkdwn leaves code alone and escapes everything else."""

from __future__ import annotations

import json

from modelbay.adapters.slack import views
from modelbay.adapters.slack.blocks import escape, escaped_chars, fallback, mrkdwn
from modelbay.bot.reply import Reply


def test_slack_mrkdwn_leaves_code_alone_and_escapes_everything() -> None:
    text = "**Bold** and `**kwargs` and `x**2`.\n```python\ndef f(**kwargs):\n    return x**2 ** 3\n```\n**End**"
    assert mrkdwn(text) == ("*Bold* and `**kwargs` and `x**2`.\n```python\ndef f(**kwargs):\n    return x**2 ** 3\n"
                            "```\n*End*")
    assert mrkdwn("3**2 is 9 and **x**") == "3**2 is 9 and *x*"  # the nearest pair of stars is the bold one
    assert mrkdwn("**a\n\nb**") == "**a\n\nb**"  # bold never spans paragraphs
    hostile = "Hi <!channel> <@U0123> <http://evil.example|click> & <#C1>"
    for shown in (mrkdwn(hostile), escape(hostile), fallback(Reply(text=hostile)),
                  mrkdwn(f"```\n{hostile}\n```"), mrkdwn(f"`{hostile}`")):
        assert "<" not in shown and ">" not in shown and "&lt;!channel&gt;" in shown
    assert escaped_chars(hostile) == len(hostile) + 4 * 3 + 4 * 3 + 4  # &lt; and &gt; add 3 each, &amp; adds 4
    browse = json.dumps(views.browse_modal([], query="x", category=None, notices=[hostile], may_install=False))
    assert "<!channel>" not in browse and "&lt;!channel&gt;" in browse  # a source's notice is shown, escaped
