"""Slack surfaces other than messages: the App Home tab and modals (browse, a button's form, ask a model, upload)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelbay.adapters.slack.blocks import ACTION_PREFIX, button, context, mrkdwn, section
from modelbay.bot.commands._args import CATEGORIES
from modelbay.bot.reply import Ask, Button, Form
from modelbay.engine.analytics.charts import ms_text
from modelbay.engine.analytics.compare import Column
from modelbay.engine.chat.records import SessionRecord
from modelbay.engine.catalog.discovery import SearchHit
from modelbay.engine.records import JobRecord, ModelRecord
from modelbay.engine.units import ago, human_bytes, human_count, plural
from modelbay.engine.datasets.readers import SUFFIXES

__all__ = [
    "ASK", "BROWSE", "BROWSE_CATEGORY", "BROWSE_QUERY", "FORM", "UPLOAD", "UPLOAD_FILE", "HomeChart",
    "ask_modal", "browse_modal", "form_modal", "home_view", "upload_modal",
]

# callback and action ids the app listens for
BROWSE = "mb_browse"
BROWSE_QUERY = "mb_browse_query"
BROWSE_CATEGORY = "mb_browse_category"
FORM = "mb_rate"  # a button's form (named when the 👎 reason was the only one: open modals still submit to it)
ASK = "mb_ask"
UPLOAD = "mb_upload"
UPLOAD_FILE = "mb_upload_file"
OPEN_BROWSE = "mb_open_browse"
OPEN_UPLOAD = "mb_open_upload"
VIEW_BLOCKS = 100  # modals and Home tabs hold at most 100 blocks
HOME_FIGURES = 10  # models the Home tab's last-24-hours section lists
BROWSE_RESULTS = 20


def _plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:limit], "emoji": True}


def _option(label: str, value: str) -> dict[str, Any]:
    return {"text": _plain(label), "value": value[:150]}


def _modal(callback_id: str, title: str, blocks: list[dict[str, Any]], *, submit: str | None = None,
           metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {"type": "modal", "callback_id": callback_id, "title": _plain(title, 24),
                            "close": _plain("Close" if submit is None else "Cancel"), "blocks": blocks[:VIEW_BLOCKS]}
    if submit:
        view["submit"] = _plain(submit, 24)
    if metadata is not None:
        view["private_metadata"] = json.dumps(metadata)[:3000]
    return view


def _model_line(name: str, display: str, source: str, category: str, params: int | None, size: int | None,
                installed: bool) -> str:
    state = " · :white_check_mark: installed" if installed else ""
    return (f"*{mrkdwn(display)}*  `{mrkdwn(name)}`\n{source} · {category} · {human_count(params)} parameters · "
            f"{human_bytes(size)}{state}")


def browse_modal(hits: Sequence[SearchHit], *, query: str, category: str | None, notices: Sequence[str] = (),
                 may_install: bool) -> dict[str, Any]:
    """The "Browse models" modal: a search box and a category menu that refresh the results, each with a button."""
    category_menu: dict[str, Any] = {
        "type": "static_select", "action_id": BROWSE_CATEGORY, "placeholder": _plain("Any category"),
        "options": [_option("Any category", "all"), *(_option(c.title(), c) for c in CATEGORIES)],
    }
    if category:
        category_menu["initial_option"] = _option(category.title(), category)
    search: dict[str, Any] = {"type": "plain_text_input", "action_id": BROWSE_QUERY, "max_length": 200,
                              "placeholder": _plain("Search the registry and the Hub, e.g. code tag:small"),
                              "dispatch_action_config": {"trigger_actions_on": ["on_enter_pressed"]}}
    if query:
        search["initial_value"] = query
    blocks: list[dict[str, Any]] = [
        {"type": "input", "block_id": "query", "dispatch_action": True, "optional": True, "element": search,
         "label": _plain("Search (Enter to search)")},
        {"type": "actions", "block_id": "category", "elements": [category_menu]},
    ]
    if not hits:
        blocks.append(section("Nothing matches. Try fewer words or another category."))
    for i, hit in enumerate(hits[:BROWSE_RESULTS]):
        if hit.installed:
            action = Button("Try it", f"/chat {hit.name}", "primary")
        elif may_install:
            action = Button("Install", f"/models install {hit.name}", "primary")
        else:
            action = Button("Details", f"/models info {hit.name}")
        line = _model_line(hit.name, hit.name, hit.source, hit.category, hit.parameter_count, hit.size_bytes,
                           hit.installed)
        blocks.append(section(line, button(action, f"{ACTION_PREFIX}{i}")))
    footer = "Installs report their progress in your direct messages with ModelBay."
    if not may_install:
        footer = "Installing needs the admin role; ask an admin, or use Details to read more."
    blocks.append(context(" ".join([*map(mrkdwn, notices), footer])))  # notices may quote a source's own words
    return _modal(BROWSE, "Browse models", blocks, metadata={"query": query, "category": category})


def _input(ask: Ask) -> dict[str, Any]:
    """One asked value as an input block (block and action ids: the argument it fills)."""
    element: dict[str, Any]
    if ask.choices:
        element = {"type": "static_select", "action_id": ask.arg,
                   "options": [_option(label, value) for value, label in ask.choices]}
    else:
        element = {"type": "plain_text_input", "action_id": ask.arg, "multiline": ask.long,
                   "max_length": ask.max_length}
    if ask.placeholder:
        element["placeholder"] = _plain(ask.placeholder, 150)
    return {"type": "input", "block_id": ask.arg, "optional": ask.optional, "label": _plain(ask.label),
            "element": element}


def form_modal(button: Button, channel: str | None, thread: str | None) -> dict[str, Any]:
    """A button's form as a modal (e.g. the 👎 one: what was wrong, and an optional comment)."""
    assert button.form is not None
    form = button.form
    return _modal(FORM, form.title.format(button.value)[:24], [_input(ask) for ask in form.asks], submit=form.submit,
                  metadata={"form": form.name, "value": button.value, "channel": channel, "thread": thread})


def form_values(form: Form, state: dict[str, Any]) -> dict[str, str]:
    """The values a submitted form modal holds, by argument (left-out optional ones are absent)."""
    values: dict[str, str] = {}
    for ask in form.asks:
        entry = state.get(ask.arg, {}).get(ask.arg, {})
        value = (entry.get("selected_option") or {}).get("value") if ask.choices else entry.get("value")
        if value and value.strip():
            values[ask.arg] = value.strip()
    return values


def ask_modal(models: Sequence[ModelRecord], seed_key: str, preview: str) -> dict[str, Any]:
    """The "Ask a model" modal: which installed model answers the message, and an optional system prompt."""
    quoted = "\n".join(f"> {line}" for line in mrkdwn(preview[:500]).splitlines()) or "> (empty message)"
    if not models:
        return _modal(ASK, "Ask a model", [section(quoted), section(
            "No model is installed yet. An admin installs one with `/modelbay models install <model>`.")])
    options = [_option(f"{m.display_name} ({m.name})", m.name) for m in models[:100]]
    blocks = [
        section(quoted),
        {"type": "input", "block_id": "model", "label": _plain("Model"),
         "element": {"type": "static_select", "action_id": "model", "options": options,
                     "initial_option": options[0]}},
        {"type": "input", "block_id": "system", "optional": True, "label": _plain("System prompt"),
         "element": {"type": "plain_text_input", "action_id": "system", "multiline": True, "max_length": 4000}},
        context("The answer streams into a thread under the message; reply there to keep talking."),
    ]
    return _modal(ASK, "Ask a model", blocks, submit="Ask", metadata={"seed": seed_key})


def upload_modal() -> dict[str, Any]:
    """The dataset upload form: a file input for the kinds of files fine-tuning reads."""
    blocks = [
        {"type": "input", "block_id": "file", "label": _plain("Dataset files"),
         "element": {"type": "file_input", "action_id": UPLOAD_FILE, "max_files": 5,
                     "filetypes": [s.lstrip(".") for s in SUFFIXES]}},
        context("JSON Lines with `messages` (chat), `conversations` (ShareGPT), `instruction`/`output` (Alpaca), "
                "`prompt`/`completion` or `text` fields; CSV, TSV, JSON, Parquet or plain text. Each file gets a "
                "report card in your direct message with ModelBay; you can also send files there."),
    ]
    return _modal(UPLOAD, "Upload a dataset", blocks, submit="Upload")


@dataclass(frozen=True)
class HomeChart:
    """The dashboard chart as the Home tab shows it: an uploaded Slack file's id and the chart's text."""

    file_id: str
    text: str


def _figures_line(c: Column) -> str:
    m = c.metrics
    if not m.requests and not m.ratings:
        return f"*{mrkdwn(c.display_name)}* · no answers"
    low, high = m.satisfaction_interval or (0.0, 1.0)
    rated = f"👍 {m.satisfaction:.0%} of {m.ratings} ({low:.0%}–{high:.0%})" if m.ratings else "no ratings"
    return (f"*{mrkdwn(c.display_name)}* · {plural(m.requests, 'answer')} · p95 {ms_text(m.p95_ms)} · {rated}")


def _last_day(figures: Sequence[Column], chart: HomeChart | None) -> list[dict[str, Any]]:
    """The team's models over the last 24 hours: one line each (the busiest first) and the chart."""
    if not figures:
        return []
    blocks: list[dict[str, Any]] = [{"type": "divider"}, {"type": "header", "text": _plain("Last 24 hours", 150)},
                                    section("\n".join(_figures_line(c) for c in figures[:HOME_FIGURES]))]
    if chart is not None:
        blocks.append({"type": "image", "slack_file": {"id": chart.file_id}, "alt_text": chart.text[:2000] or "chart",
                       "title": _plain("Response time and satisfaction, last 24 hours", 2000)})
    blocks.append(context("Times in UTC; 👍 intervals are Wilson 95%. `/modelbay analytics dashboard` posts this "
                          "card; `/modelbay analytics compare <model> <model>` compares models."))
    return blocks


def home_view(*, installed: Sequence[ModelRecord], jobs: Sequence[JobRecord], chats: Sequence[SessionRecord],
              role: str, figures: Sequence[Column] = (), chart: HomeChart | None = None) -> dict[str, Any]:
    """The App Home tab: actions, the team's models over the last 24 hours with the dashboard chart (an uploaded
    file shown by its id, with the chart's text as its alt text), installed models, running jobs and the person's
    recent chats."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain("ModelBay", 150)},
        {"type": "actions", "elements": [
            {"type": "button", "action_id": OPEN_BROWSE, "text": _plain("Browse models"), "style": "primary"},
            {"type": "button", "action_id": OPEN_UPLOAD, "text": _plain("Upload a dataset")},
        ]},
        context(f"Your role: {role} · `/modelbay help` lists every command."),
        *_last_day(figures, chart),
        {"type": "divider"},
        {"type": "header", "text": _plain("Installed models", 150)},
    ]
    if not installed:
        blocks.append(section("Nothing installed yet. Browse models to find one."))
    for i, m in enumerate(installed[:15]):
        line = _model_line(m.name, m.display_name, m.source, m.category, m.parameter_count, m.size_bytes, False)
        blocks.append(section(line, button(Button("Try it", f"/chat {m.name}", "primary"), f"{ACTION_PREFIX}m{i}")))
    blocks += [{"type": "divider"}, {"type": "header", "text": _plain("Running jobs", 150)}]
    if not jobs:
        blocks.append(section("No jobs are running."))
    for i, job in enumerate(jobs[:10]):
        detail = job.progress_detail.get("message") or ""
        text = f"*{mrkdwn(job.kind)}* `{job.id}` · {job.status} · {job.progress:.0%}" + (
            f"\n{mrkdwn(str(detail))}" if detail else "")
        blocks.append(section(text, button(Button("Cancel", f"/jobs cancel {job.id}", "danger"),
                                            f"{ACTION_PREFIX}j{i}")))
    blocks += [{"type": "divider"}, {"type": "header", "text": _plain("Your recent chats", 150)}]
    if not chats:
        blocks.append(section("No chats yet. Press Try it beside a model, or `/modelbay chat <model>`."))
    for chat in chats[:10]:
        where = f"<#{chat.place.channel_id}>" if not chat.place.channel_id.startswith("D") else "a direct message"
        state = "ended" if chat.closed else "open"
        # experiments: a running experiment's chat never names its model
        name = f"experiment {chat.experiment}" if chat.experiment else chat.model_display_name
        blocks.append(section(f"*{mrkdwn(name)}* in {where} · {state} · "
                               f"started {ago(chat.created_at)}"))
    return {"type": "home", "blocks": blocks[:VIEW_BLOCKS]}
