"""/optimize: options into the seed's OptimizationConfig, one-line refusals before anything is read, the live card
at each report and the card that replaces it when the job ends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from modelbay.bot import COMMANDS
from modelbay.bot.commands.optimize import (
    SPEED_NOTE,
    budget_of,
    key_figures,
    live_card,
    onnx_config,
    prune_config,
    quantize_config,
    recipe_config,
    report_table,
    result_card,
    step_text,
    verdict_reason,
    versus,
)
from modelbay.bot.context import Actor
from modelbay.bot.dispatcher import Dispatcher
from modelbay.bot.progress import advance
from modelbay.bot.reply import Attachment, Reply
from modelbay.engine.errors import OptimizationConfigInvalid
from modelbay.engine.jobs.progress import ProgressEvent
from modelbay.engine.optimization.charts import ChartRow, figure_text, kl_text, percent_text, significant, variants_text
from modelbay.engine.optimization.config import Step, load_recipes, steps
from modelbay.engine.optimization.methods.onnx import OnnxExport
from modelbay.engine.optimization.optimization import OptimizationStatus
from modelbay.engine.optimization.progress import OptimizationDetail
from modelbay.engine.records import JobRecord

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ANN, BOB = Actor("test", "ann"), Actor("test", "bob")
RUNTIME = SimpleNamespace(settings=SimpleNamespace(roles={"trainer": [ANN.key]}, default_role="user"))
DISPATCHER = Dispatcher(RUNTIME, COMMANDS)  # type: ignore[arg-type]


def _run(line: str, actor: Actor = ANN) -> Reply:
    return asyncio.run(DISPATCHER.dispatch_line(line, actor))


# -- options into the config ------------------------------------------------------------------------------------------

def test_each_command_s_options_become_the_seed_s_config() -> None:
    eight = quantize_config("8")
    assert (eight.type, eight.quantization.bits, eight.quantization.method, eight.preserve_accuracy) == (
        "quantization", 8, "dynamic", True)
    four = quantize_config("4", "bitsandbytes", "fp4", budget="3%")
    assert (four.quantization.bits, four.quantization.method, four.quantization.data_type) == (4, "bitsandbytes", "fp4")
    assert four.preserve_accuracy == 3.0
    aimed = quantize_config(None, target=75, budget="off")
    assert (aimed.quantization.bits, aimed.target_reduction, aimed.preserve_accuracy) == (None, 75, False)

    pruned = prune_config(0.5, "wanda", "2:4")
    assert (pruned.type, pruned.pruning.method, pruned.pruning.sparsity, pruned.pruning.structure) == (
        "pruning", "wanda", 0.5, "2:4")
    assert prune_config(None, target=30).target_reduction == 30

    assert onnx_config("true").export.int8 is True and onnx_config(None).export.int8 is False
    assert onnx_config("static").export.int8 == "static" and onnx_config("dynamic").export.int8 == "dynamic"
    assert recipe_config("slim-cpu").model_dump(by_alias=True, exclude_none=True) == {
        "type": "recipe", "recipe": "slim-cpu", "preserveAccuracy": True}


def test_the_steps_each_config_asks_for() -> None:
    def methods(config: object, calibration: bool = False) -> list[tuple[str, dict]]:
        return [(s.method, s.params) for s in steps(config, calibration=calibration)]  # type: ignore[arg-type]

    assert methods(quantize_config("8"))[0] == ("bnb", {"bits": 8})
    assert methods(quantize_config("4"))[0][1]["quant_type"] == "nf4"
    assert methods(quantize_config("16", None, "bf16"))[0] == ("cast", {"dtype": "bfloat16"})
    assert methods(quantize_config("8", "onnx"))[0][0] == "onnx"
    assert methods(prune_config(0.3, structure="channels"))[0][0] == "channels"
    assert methods(prune_config(None, "wanda", "2:4"))[0][1]["structure"] == "2:4"
    assert methods(onnx_config("true"))[0][1]["int8"] == "dynamic"
    assert methods(onnx_config("static"), calibration=True)[0][1]["int8"] == "static"
    assert [m for m, _ in methods(recipe_config("slim-cpu"))] == [s.method for s in load_recipes()["slim-cpu"].steps]


def test_budgets_read_as_people_write_them() -> None:
    assert [budget_of(x) for x in (None, "default", "off", "none", "2", "2%", "+2.5%", "0")] == [
        True, True, False, False, 2.0, 2.0, 2.5, 0.0]
    for bad in ("lots", "-1", "nan", "inf"):
        with pytest.raises(OptimizationConfigInvalid, match="`budget`"):
            budget_of(bad)


# -- refusals ----------------------------------------------------------------------------------------------------------

def _refused(line: str, actor: Actor = ANN) -> str:
    reply = _run(line, actor)
    assert reply.tone in ("warning", "error") and "\n" not in reply.text and len(reply.text) < 400, reply.text
    return reply.text


def test_impossible_combinations_are_refused_in_one_line_before_anything_is_read() -> None:
    # The runtime has no services: each of these is refused from the options alone.
    assert "int8 is not a 4-bit type" in _refused("/optimize quantize tiny bits:4 type:int8")
    assert "nf4 is not a 8-bit type" in _refused("/optimize quantize tiny bits:8 type:nf4")
    assert "`sparsity` must be a number from 0 to 1 (got 1.5)" in _refused("/optimize prune tiny sparsity:1.5")
    assert "`pruning.sparsity`" in _refused("/optimize prune tiny sparsity:1")  # in the argument's range, not a fraction
    assert "2:4 sparsity is exactly 0.5" in _refused("/optimize prune tiny sparsity:0.3 structure:2:4")
    assert "static int8 needs calibration data" in _refused("/optimize onnx tiny int8:static")
    assert "static int8 needs calibration data" in _refused("/optimize quantize tiny bits:8 method:static")
    assert "a cast gives 16 bits" in _refused("/optimize quantize tiny bits:8 method:cast")
    assert "give bits" in _refused("/optimize quantize tiny")
    assert "`budget`" in _refused("/optimize quantize tiny bits:8 budget:lots")
    assert "`target` must be a number from 0.01 to 99.99 (got 150)" in _refused("/optimize quantize tiny target:150")
    assert "`bits` must be one of 4, 8, 16" in _refused("/optimize quantize tiny bits:5")
    assert "`recipe` must be one of" in _refused("/optimize recipe tiny no-such-recipe")


def test_starting_needs_the_trainer_role() -> None:
    for line in ("/optimize quantize tiny bits:8", "/optimize prune tiny sparsity:0.5", "/optimize onnx tiny",
                 "/optimize recipe tiny half"):
        assert "needs the trainer role" in _refused(line, BOB), line
    assert all(c.role == "trainer" for c in COMMANDS if c.path[:1] == ("optimize",)
               and c.path[1] in ("quantize", "prune", "onnx", "recipe"))


# -- the cards ---------------------------------------------------------------------------------------------------------

REPORT = {
    "parent": {"format": "transformers", "size_bytes": 40_000_000, "load_s": 0.5, "peak_load_bytes": 80_000_000,
               "ttft_ms": 20.0, "tokens_per_s": 100.0, "perplexity": 10.0, "perplexity_se": 0.2, "sparsity": 0.0,
               "device": "cpu"},
    "variant": {"format": "transformers", "size_bytes": 12_000_000, "load_s": 0.25, "peak_load_bytes": 30_000_000,
                "ttft_ms": 30.0, "tokens_per_s": 80.0, "perplexity": 11.0, "perplexity_se": 0.25, "sparsity": None,
                "device": "cpu"},
    "versus": {"size_ratio": 0.3, "ppl_ratio": 1.1, "speed_ratio": 0.8, "ttft_ratio": 1.5, "load_ratio": 0.5,
               "memory_ratio": 0.375, "kl_mean": 0.0123, "kl_se": 0.001, "top1_agreement": 0.955},
    "labels": ["bitsandbytes 4-bit nf4"], "verdict": "over budget", "reason": "perplexity +10% is over the +8% budget",
    "heldout": {"source": "the shipped held-out text", "tokens": 4096},
}


def _status(status: str = "queued", *, detail: OptimizationDetail | None = None, result: dict | None = None,
            error: str | None = None, queue: str = "gpu") -> OptimizationStatus:
    detail = detail or OptimizationDetail()
    job = JobRecord(id="j1", kind="optimize", queue=queue, status=status, progress=0.0, progress_detail=detail,
                    requester="test:ann", params={"name": "tiny-nf4", "parent": "tiny-chat",
                                                  "labels": ["bitsandbytes 4-bit nf4"]},
                    result=result, error=error, attempts=1, created_at=NOW, started_at=NOW,
                    ended_at=None if status in ("queued", "started") else NOW)
    return OptimizationStatus(job=job, detail=detail, name="tiny-nf4", parent="tiny-chat",
                              steps=({"method": "bnb", "params": {"bits": 4}},), labels=("bitsandbytes 4-bit nf4",),
                              result=result, chart=None)


def _fields(reply: Reply) -> dict[str, str]:
    return {f.name: f.value for f in reply.fields}


def test_the_live_card_shows_the_phase_and_the_step_with_its_method_and_fraction() -> None:
    card = live_card(_status(), intro="bitsandbytes 4-bit nf4 of `tiny-chat`.")
    assert card.title == "Optimizing tiny-chat → tiny-nf4" and card.text.endswith("Waiting for a gpu worker…")
    assert list(_fields(card)) == ["Parent", "New model", "Steps"]
    assert [b.command for b in card.buttons] == ["/jobs cancel j1"]

    step = ProgressEvent("j1", "started", 0.3, "Step 1/2 (bitsandbytes 4-bit nf4): quantizing",
                         OptimizationDetail(phase="applying", step=1, steps=2, method="bitsandbytes 4-bit nf4",
                                            step_fraction=0.25))
    moving = advance(card, step)
    assert moving.text.splitlines()[-1] == "Applying the steps…"
    assert _fields(moving) == {**_fields(card), "Step": "1/2 · bitsandbytes 4-bit nf4", "This step": "25%"}
    assert moving.progress.detail == "Step 1/2 (bitsandbytes 4-bit nf4): quantizing"

    measuring = advance(card, ProgressEvent("j1", "started", 0.8, "Measuring", OptimizationDetail(phase="measuring")))
    assert measuring.text.splitlines()[-1] == "Measuring the variant against the parent…"
    assert list(_fields(measuring)) == ["Parent", "New model", "Steps"]


def test_the_result_card_shows_the_report_the_verdict_try_it_and_the_chart() -> None:
    chart = Attachment("optimize-j1.png", b"\x89PNG", "image/png")
    result = {"version_id": 7, "name": "tiny-nf4", "parent": "tiny-chat", "verdict": "over budget",
              "reason": REPORT["reason"], "report": REPORT, "chart": None, "text": "..."}
    card = result_card(_status("finished", result=result), chart)
    assert card.title == "Optimized tiny-nf4 (over budget)" and card.tone == "warning"
    assert "Kept as over budget, not a drop-in" in card.text and "perplexity +10.00%" in card.text
    assert "4,096 tokens" in card.text and "the shipped held-out text" in card.text
    assert card.table.columns == ["Measure", "tiny-chat", "tiny-nf4", "Variant / parent"]
    rows = {row[0]: row[1:] for row in card.table.rows}
    assert rows["Size (served weights)"] == ["40 MB", "12 MB", "0.30×"] and "Size on disk" not in rows
    assert rows["Perplexity"] == ["10.00 ± 0.20", "11.00 ± 0.25", "1.100×"]
    assert rows["Tokens/s"] == ["100.0", "80.0", "0.80×"] and rows["Time to first token"][2] == "1.5×"
    assert rows["Load time"][2] == "0.50×" and rows["Peak memory to load"][2] == "0.375×"
    assert rows["KL divergence (mean)"][1] == "0.0123 ± 0.0010" and rows["Top-1 agreement"][1] == "95.5%"
    assert rows["Sparsity"] == ["0.0%", "-", ""]
    assert card.attachments == [chart] and card.buttons[0].command == "/chat tiny-nf4"
    assert "version #7" in card.footer and card.footer.splitlines()[0] == SPEED_NOTE

    within = result_card(_status("finished", result={**result, "verdict": "within budget", "reason": "ok"}))
    assert within.title == "Optimized tiny-nf4" and within.tone == "success" and "**Within budget**: ok" in within.text

    # Older or partial reports: every missing figure reads "-".
    bare = result_card(_status("finished", result={"name": "tiny-nf4", "report": {"parent": {}, "variant": {}}}))
    assert all(cell in ("-", "") for row in bare.table.rows for cell in row[1:]) and "Sparsity" not in str(bare.table)


def test_canceled_and_failed_jobs_end_with_one_line() -> None:
    canceled = result_card(_status("canceled"))
    assert canceled.title == "Optimizing tiny-nf4: canceled" and canceled.text == "Canceled; nothing partial was kept."
    failed = result_card(_status("failed", error="ONNX export could not make a variant of `tiny-chat`: no.\nTrace"))
    assert failed.tone == "error" and "\n" not in failed.text and failed.text.startswith("ONNX export could not")


def test_versus_reads_nested_and_flat_reports() -> None:
    flat = {"size": 0.3, "perplexity": 1.1, "speed": 0.8, "ttft": 1.5, "load": 0.5, "memory": 0.375,
            "kl_mean": 0.0123, "kl_se": 0.001, "top1_agreement": 0.955}
    assert versus(REPORT["versus"]) == flat  # compare.Comparison.versus(), as a job stores it
    nested = {"kl": {"kl_mean": 0.0123, "kl_se": 0.001, "top1_agreement": 0.955},
              "ratios": {"size": 0.3, "perplexity": 1.1, "speed": 0.8, "ttft": 1.5, "load": 0.5, "memory": 0.375}}
    assert versus(nested) == flat  # compare.Comparison.to_dict()
    assert versus(None) == {} and versus({"ratios": {"speed": None}}) == {}


def test_the_module_is_registered_with_its_commands() -> None:
    paths = {" ".join(c.path) for c in COMMANDS if c.path[:1] == ("optimize",)}
    assert paths == {"optimize quantize", "optimize prune", "optimize onnx", "optimize recipe", "optimize recipes",
                     "optimize compare", "optimize list", "optimize status"}


# -- how figures read --------------------------------------------------------------------------------------------------

def test_figures_read_in_one_human_format() -> None:
    # Ratios: enough significant figures that a small one never reads 0.00; timing ratios to 2 significant figures.
    assert [significant(x, 3, 2) for x in (0.0032, 0.3, 0.125, 1.1, 0.0)] == ["0.0032", "0.30", "0.125", "1.10", "0.00"]
    assert [significant(x, 2, strip=False) for x in (0.8, 1.46, 0.0123, 12.3)] == ["0.80", "1.5", "0.012", "12"]
    assert significant(-0.0, 3, 2) == "0.00"  # never -0.00
    # Perplexity: thousands separators from 1,000, else 4 significant figures; never 1.2e+04.
    assert [figure_text(x) for x in (12010.0, 12000.4, 10.0, 9.87654)] == ["12,010", "12,000", "10.00", "9.877"]
    assert figure_text(0.2, 2) == "0.20" and "e" not in figure_text(3e-6, 2)
    # Percents with 2 decimals; tiny but not zero reads <0.01%, never 3e-06% or -0.00%.
    assert [percent_text(x) for x in (0.0123, 3e-8, 0.005)] == ["1.23%", "<0.01%", "0.50%"]
    assert [percent_text(x, signed=True) for x in (0.0, -1e-9, 0.012, -0.02)] == ["+0.00%", "<0.01%", "+1.20%",
                                                                                 "-2.00%"]
    # KL: rounding noise below zero reads 0.
    assert kl_text(-1e-7) == "0.0000" and not kl_text(-1e-7, 1e-5).startswith("-")
    assert kl_text(0.0123, 0.001) == "0.0123 ± 0.0010" and kl_text(0.00004) == "0.00004"


def test_the_card_never_prints_0_00_or_minus_zero_or_exponents() -> None:
    tiny = {**REPORT,
            "parent": {**REPORT["parent"], "perplexity": 12010.0, "perplexity_se": 240.5},
            "variant": {**REPORT["variant"], "size_bytes": 128_000, "perplexity": 12000.4, "perplexity_se": 239.9},
            "versus": {**REPORT["versus"], "size_ratio": 0.0032, "ppl_ratio": 0.99992, "kl_mean": -2e-9, "kl_se": 1e-9,
                       "ttft_ratio": 1.0437, "speed_ratio": 0.9583}}
    rows = {row[0]: row[1:] for row in report_table(tiny).rows}
    assert rows["Size (served weights)"][2] == "0.0032×"
    assert rows["Perplexity"] == ["12,010 ± 240", "12,000 ± 240", "0.9999×"]
    assert rows["KL divergence (mean)"][1] == "0.0000 ± 0.000000001" and "-" not in rows["KL divergence (mean)"][1]
    assert rows["Time to first token"][2] == "1.0×" and rows["Tokens/s"][2] == "0.96×"
    text = str(report_table(tiny).rows)
    assert "0.00×" not in text and "e+0" not in text and "e-0" not in text
    assert key_figures(tiny).startswith("weights 0.0032× · perplexity 0.9999× · tokens/s 0.96× · KL 0.0000")


def test_a_stored_verdict_reason_reads_in_the_cards_formats() -> None:
    reason = "perplexity 1.201e+04 → 1.2e+04 (+0% ± 3e-06%), at most +0%: within the +2% budget for 8-bit"
    report = {"parent": {"perplexity": 12010.0}, "variant": {"perplexity": 12000.4}}
    assert verdict_reason(reason, report) == ("perplexity 12,010 → 12,000 (+0.00% ± <0.01%), at most +0.00%: within "
                                              "the +2% budget for 8-bit")
    assert verdict_reason(reason) .startswith("perplexity 12,010 → 12,000 (")  # from the text alone
    over = ("perplexity 10 → 11.5 (+15% ± 0.2%): over the +8% budget for 4-bit; size target -75% NOT reached: "
            "+70.0% removed")
    assert verdict_reason(over) == ("perplexity 10.00 → 11.50 (+15.00% ± 0.20%): over the +8% budget for 4-bit; size "
                                    "target -75% NOT reached: +70.0% removed")  # the notes stay as written
    assert verdict_reason(None) is None and verdict_reason("ok") == "ok"
    card = result_card(_status("finished", result={"name": "tiny-nf4", "verdict": "within budget", "reason": reason,
                                                    "report": {**REPORT, **report}}))
    assert "(+0.00% ± <0.01%)" in card.text and "e+04" not in card.text


def test_a_sparsity_an_earlier_step_measured_shows_for_a_quantized_variant() -> None:
    facts = [{"method": "prune", "label": "Wanda", "sparsity": 0.5}, {"method": "bnb", "label": "bitsandbytes 8-bit"}]
    rows = {row[0]: row[1:] for row in report_table({**REPORT, "facts": facts}).rows}
    assert rows["Sparsity"] == ["0.0%", "50.0% (before quantizing)", ""]
    onnx = [{"method": "prune", "sparsity": 0.25}, {"method": "onnx"}]
    no_parent = {**REPORT, "parent": {**REPORT["parent"], "sparsity": None}, "facts": onnx}
    assert {r[0]: r[1:] for r in report_table(no_parent).rows}["Sparsity"] == ["-", "25.0% (before the ONNX export)",
                                                                               ""]
    # Measured on the variant itself: that figure; no pruning step: "-" as before.
    measured = {**REPORT, "variant": {**REPORT["variant"], "sparsity": 0.49}, "facts": facts}
    assert {r[0]: r[1:] for r in report_table(measured).rows}["Sparsity"] == ["0.0%", "49.0%", ""]
    assert {r[0]: r[1:] for r in report_table({**REPORT, "facts": [{"method": "bnb"}]}).rows}["Sparsity"][1] == "-"


def test_onnx_labels_and_recipe_steps_read_as_people_say_them() -> None:
    onnx = OnnxExport()
    assert [onnx.describe(onnx.check({"int8": x})) for x in (False, True, "dynamic", "static")] == [
        "ONNX export (fp32, opset 18)", "ONNX export (int8 dynamic, opset 18)", "ONNX export (int8 dynamic, opset 18)",
        "ONNX export (int8 static, opset 18)"]
    shown = {name: " → ".join(step_text(s) for s in r.steps) for name, r in load_recipes().items()}
    assert shown["browser"] == "ONNX export (fp32, opset 18)"
    assert shown["cpu-int8"] == "ONNX export (int8 dynamic, opset 18)" and shown["slim-cpu"].endswith(
        "→ ONNX export (int8 dynamic, opset 18)")
    assert not any("False" in text or "True" in text for text in shown.values()), shown
    assert step_text(Step("no-such-method", {"a": 1})) == "no-such-method (a 1)"  # what it can


def test_the_chart_text_uses_the_same_formats() -> None:
    parent = {"format": "transformers", "size_bytes": 40_000_000, "load_s": 0.5, "peak_load_bytes": 1, "ttft_ms": 1.0,
              "tokens_per_s": 100.0, "perplexity": 12010.0, "perplexity_se": 240.0, "nll_mean": 9.4, "tokens": 4096}
    variant = {**parent, "size_bytes": 128_000, "perplexity": 12000.4}
    rows = [ChartRow.of("p", parent, parent=True),
            ChartRow.of("v", variant, verdict="within budget",
                        versus={"size_ratio": 0.0032, "ppl_ratio": 0.99992, "speed_ratio": 1.5})]
    line = variants_text(rows).splitlines()[1]
    assert "ppl 12,000 ± 240" in line and "(0.0032x size, 0.9999x ppl, 1.50x speed)" in line


def test_an_unknown_optimize_or_train_word_is_a_usage_error_not_a_bad_limit() -> None:
    for line, usage in (("/optimize foo", "/optimize list"), ("/train foo", "/train list")):
        text = _refused(line)
        assert "limit" not in text.split("Usage")[0] and "`foo`" in text and f"Usage: `{usage}" in text, text
    limit = next(a for a in next(c for c in COMMANDS if c.path == ("optimize", "list")).args if a.name == "limit")
    assert limit.named
