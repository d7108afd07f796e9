"""/optimize from chat without workers (the card a start answers with, list, status, cancel) and what the registry
shows of optimized variants: `/models info`'s lineage tree (base -> fine-tune -> 8-bit) with each variant's verdict
and key figures, and `/optimize compare`'s table, chart and notes. The variants here are registered as a finished
job registers them (`add_derived_version`) with reports of the real shape (`measure.Measurement`,
`compare.Comparison`); a job through a real worker is tests/scenarios/test_optimize.py's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelbay.bot import Actor, Dispatcher, Reply
from modelbay.config import Settings
from modelbay.engine.installs.derived import Derived, add_derived_version
from modelbay.engine.installs.store import ModelStore
from modelbay.engine.jobs.kinds import PROBE
from modelbay.engine.optimization.compare import Comparison
from modelbay.engine.optimization.measure import KlStats, Measurement
from modelbay.engine.records import VersionRecord
from modelbay.runtime import Runtime
from tests.support.chat import installed

ANN, BOB = Actor("console", "ann"), Actor("console", "bob")


@pytest.fixture
def bot(settings: Settings, tiny_chat_model: Path) -> Iterator:
    """Run lines as people: Ann is a trainer, Bob a user (no workers: jobs stay queued)."""
    settings.roles = {"trainer": [ANN.key]}
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_chat_model)
    dispatcher = Dispatcher(runtime, reraise_unknown=True)

    def run(line: str, actor: Actor = ANN) -> Reply:
        return asyncio.run(dispatcher.dispatch_line(line, actor))

    run.runtime = runtime  # type: ignore[attr-defined]
    yield run
    runtime.close()


def _fields(reply: Reply) -> dict[str, str]:
    return {f.name: f.value for f in reply.fields}


def test_a_start_answers_with_the_live_card_and_the_job_is_listed_shown_and_canceled(bot) -> None:
    card = bot("/optimize quantize tiny-chat bits:16 budget:1")
    assert card.title == "Optimizing tiny-chat → tiny-chat-fp16", card.text
    assert "of `tiny-chat` (version #" in card.text and "on a cpu worker" in card.text
    assert "the shipped held-out text" in card.text and "budget: perplexity at most +1%" in card.text
    assert card.text.endswith("Waiting for a cpu worker…") and card.progress.status == "queued"
    job = card.progress.job_id
    assert [b.command for b in card.buttons] == [f"/jobs cancel {job}"]
    assert card.progress.done[0].command == "/chat tiny-chat-fp16"

    again = bot("/optimize quantize tiny-chat bits:16 budget:1")
    assert again.progress.job_id == job and "already queued or running: this is it" in again.text

    listed = bot("/optimize list")
    assert listed.table.rows[0][:5] == [job, "tiny-chat-fp16", "tiny-chat", _fields(card)["Steps"], "queued 0%"]
    assert bot(f"/optimize status {job}").title == card.title
    assert bot("/optimize list", BOB).text.startswith("No optimization jobs yet")
    assert "needs the trainer role" in bot("/optimize onnx tiny-chat int8:true", BOB).text
    assert "admin" in bot("/optimize list all:true").text

    probe = bot.runtime.jobs.submit(PROBE.name, {}, requester=ANN.key).job.id
    other = bot(f"/optimize status {probe}")
    assert other.title == "Not an optimization job" and f"/jobs watch {probe}" in other.text

    bot(f"/jobs cancel {job}")
    canceled = bot(f"/optimize status {job}")
    assert canceled.title == "Optimizing tiny-chat-fp16: canceled" and canceled.text == (
        "Canceled; nothing partial was kept.")
    recipes = bot("/optimize recipes")
    assert "slim-cpu" in [row[0] for row in recipes.table.rows]


# -- variants in the registry ----------------------------------------------------------------------------------------

def _measurement(size: int, perplexity: float, speed: float, sparsity: float | None = 0.0) -> Measurement:
    return Measurement(format="transformers", size_bytes=size, load_s=0.4, peak_load_bytes=size * 2, ttft_ms=12.0,
                       tokens_per_s=speed, perplexity=perplexity, perplexity_se=perplexity / 50, nll_mean=2.3,
                       tokens=4096, sparsity=sparsity, parameters=1_000_000, device="cpu", threads=2)


def _variant(runtime: Runtime, parent: VersionRecord, of: str, name: str, lineage: str, tmp_path: Path, *,
             labels: tuple[str, ...] = (), verdict: str | None = None, figures: tuple = ()) -> VersionRecord:
    """Register a variant as a finished job does (files moved into the store), with a report when optimized."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(f'{{"name": "{name}"}}')
    params: dict = {}
    if lineage == "optimize":
        before, after = _measurement(*figures[0]), _measurement(*figures[1], sparsity=None)
        kl = KlStats(kl_mean=0.0042, kl_se=0.0003, kl_p99=0.05, top1_agreement=0.981, top1_se=0.002, tokens=4096,
                     ln_ratio_mean=0.01, ln_ratio_se=0.002)
        comparison = Comparison(before, after, kl)
        params = {"steps": [], "verdict": verdict, "format": "transformers",
                  "report": {"parent_name": of, "labels": list(labels), "parent": before.to_dict(),
                             "variant": after.to_dict(), "versus": comparison.versus(), "verdict": verdict,
                             "reason": f"perplexity +{(comparison.ppl_ratio - 1):.1%}",
                             "heldout": {"source": "the shipped held-out text", "tokens": 4096}}}
    derived = Derived(source="optimized" if lineage == "optimize" else "finetune", lineage=lineage,
                      tags=(lineage,), parts=[(folder, ".")], description=f"{name} of {{base}}")
    return add_derived_version(runtime.db, parent=parent, name=name, derived=derived, params=params,
                               store=ModelStore(runtime.settings.resolved_model_store), check=lambda staged, of: {})


def _family(runtime: Runtime, tmp_path: Path) -> None:
    """tiny-chat -> tiny-ft (a fine-tune) -> tiny-ft-int8 (within budget); tiny-chat -> tiny-chat-nf4 (over)."""
    root = runtime.registry.get("tiny-chat").versions[0]
    tuned = _variant(runtime, root, "tiny-chat", "tiny-ft", "finetune", tmp_path)
    _variant(runtime, tuned, "tiny-ft", "tiny-ft-int8", "optimize", tmp_path, labels=("bitsandbytes 8-bit",),
             verdict="within budget", figures=((40_000_000, 10.0, 100.0), (12_000_000, 10.1, 60.0)))
    _variant(runtime, root, "tiny-chat", "tiny-chat-nf4", "optimize", tmp_path, labels=("bitsandbytes 4-bit nf4",),
             verdict="over budget", figures=((40_000_000, 10.0, 100.0), (8_000_000, 11.5, 50.0)))


def test_models_info_shows_the_lineage_tree_and_each_variant_s_verdict_and_figures(bot, tmp_path: Path) -> None:
    _family(bot.runtime, tmp_path)

    middle = _fields(bot("/models info tiny-ft"))["Lineage"].splitlines()
    assert middle[0] == "`tiny-chat`"
    assert middle[1].endswith("`tiny-ft` · fine-tune ← this model") and middle[1].startswith("└ ")
    assert "`tiny-ft-int8` · bitsandbytes 8-bit · within budget · weights 0.30× · perplexity 1.010×" in middle[2]
    assert "top-1 98.1%" in middle[2] and len(middle) == 3

    leaf = _fields(bot("/models info tiny-chat-nf4"))
    assert leaf["Optimized from"].startswith("`tiny-chat` (version #") and leaf["Made by"] == "bitsandbytes 4-bit nf4"
    assert leaf["Verdict"].startswith("over budget (kept as over budget, not a drop-in): perplexity +15.00%")
    assert leaf["Against its parent"].startswith("weights 0.20× · perplexity 1.150× · tokens/s 0.50× · KL 0.0042")
    assert leaf["Lineage"].splitlines()[-1].endswith("← this model")

    base = _fields(bot("/models info tiny-chat"))["Lineage"].splitlines()
    assert base[0] == "`tiny-chat` ← this model" and len(base) == 4
    assert [line.strip("\u00a0├└ ").split("`")[1] for line in base[1:]] == ["tiny-ft", "tiny-ft-int8",
                                                                           "tiny-chat-nf4"]
    assert base[2].startswith("\u00a0" * 3 + "└ ")  # the fine-tune's variant, one level deeper

    tuned_info = bot("/models info tiny-ft")
    assert "Fine-tuned from" in _fields(tuned_info)  # a fine-tune's own lineage fields stay


def test_compare_lays_variants_beside_their_parents_with_the_chart(bot, tmp_path: Path) -> None:
    _family(bot.runtime, tmp_path)
    compared = bot("/optimize compare tiny-ft-int8 tiny-chat-nf4")
    names = [row[0] for row in compared.table.rows]
    assert names == ["tiny-ft", "tiny-chat", "tiny-ft-int8", "tiny-chat-nf4"]
    nf4 = compared.table.rows[3]
    assert nf4[1] == "bitsandbytes 4-bit nf4" and nf4[-1] == "over budget" and "weights 0.20×" in nf4[7]
    assert compared.table.columns[2] == "Size (served weights)"
    assert compared.attachments[0].data.startswith(b"\x89PNG") and compared.attachments[0].is_image
    assert "different held-out texts" not in compared.text and "Chart, as text" in compared.text
    assert [b.command for b in compared.buttons] == ["/chat tiny-ft-int8"]  # the over-budget variant is not offered
    assert "vary between runs" in compared.footer


def test_compare_notes_a_name_with_no_model_and_lists_each_model_once(bot, tmp_path: Path) -> None:
    _family(bot.runtime, tmp_path)
    compared = bot("/optimize compare tiny-chat-nf4 no-such-model")
    assert [row[0] for row in compared.table.rows] == ["tiny-chat", "tiny-chat-nf4"]
    assert compared.text.splitlines()[0].startswith("No model named `no-such-model`")
    nothing = bot("/optimize compare no-such-model")
    assert nothing.table is None and nothing.text.startswith("No model named `no-such-model`")

    # tiny-ft-int8 is a variant (of tiny-ft) and the parent of tiny-ft-int8-onnx: one row, its variant row.
    int8 = bot.runtime.registry.get("tiny-ft-int8").versions[0]
    _variant(bot.runtime, int8, "tiny-ft-int8", "tiny-ft-int8-onnx", "optimize", tmp_path,
             labels=("ONNX export (fp32, opset 18)",), verdict="within budget",
             figures=((12_000_000, 10.1, 60.0), (12_500_000, 10.1, 70.0)))
    both = bot("/optimize compare tiny-ft-int8 tiny-ft-int8-onnx")
    names = [row[0] for row in both.table.rows]
    assert names == ["tiny-ft", "tiny-ft-int8", "tiny-ft-int8-onnx"], names
    assert both.table.rows[1][1] == "bitsandbytes 8-bit"  # the variant row, not a parent row
    chart_text = both.text.split("**Chart, as text:**\n")[1].splitlines()
    assert [line.split()[0] for line in chart_text] == ["tiny-ft", "tiny-ft-int8", "tiny-ft-int8-onnx"]
    assert both.attachments[0].data.startswith(b"\x89PNG")


def test_a_long_lineage_line_keeps_this_model_whole(bot, tmp_path: Path) -> None:
    root = bot.runtime.registry.get("tiny-chat").versions[0]
    _variant(bot.runtime, root, "tiny-chat", "tiny-chat-" + "x" * 50, "optimize", tmp_path,
             labels=("Wanda 50% unstructured", "ONNX export (int8 dynamic, opset 18)"), verdict="within budget",
             figures=((40_000_000, 10.0, 100.0), (12_000_000, 10.1, 60.0)))
    line = _fields(bot("/models info tiny-chat-" + "x" * 50))["Lineage"].splitlines()[-1]
    assert line.endswith("… ← this model") and "int8 dynamic" in line
