"""A variant against its parent: the ratios, the quality budget, and the verdict.

The budget is a largest perplexity increase over the parent, on the same held-out tokens and machine. Defaults per
kind of variant (`DEFAULT_BUDGETS`): 16-bit +0.5%, 8-bit +2%, 4-bit +8%, pruning +10%, ONNX fp32 +0.5%, ONNX int8
+2% (the 8-bit and 4-bit figures are the issue's; llama.cpp's q8_0 adds under 0.1% and q4_K_M about 3% on
Llama-3-8B, torchao's int4 weight-only about 12%). A person's `preserveAccuracy` number replaces it (percent),
`false` removes it.

Noise rule: a variant is "within budget" only when the perplexity ratio's one-sided 95% upper bound,
exp(mean ln ratio + 1.645 * its standard error), is at most 1 + budget; otherwise it is "over budget", and the
reason says whether the measured ratio itself is over or only its bound is. The standard error is the paired one
(per-token NLL differences on the same tokens, `KlStats.ln_ratio_se`, as llama.cpp's "ln(PPL(Q)/PPL(base))"); without
KL stats it is the two perplexities' own errors combined as if independent, which is wider (more cautious).
So a variant is offered as good only when the text shows it is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, NamedTuple

from modelbay.engine.optimization.charts import figure_text, percent_text
from modelbay.engine.optimization.measure import KlStats, Measurement

__all__ = ["DEFAULT_BUDGETS", "Z_ONE_SIDED_95", "Budget", "Comparison", "Verdict", "VerdictLabel",
           "verdict"]

# Largest perplexity increase (a fraction) per kind of variant: config.BUDGET_KINDS.
DEFAULT_BUDGETS: dict[str, float] = {
    "16-bit": 0.005, "8-bit": 0.02, "4-bit": 0.08, "pruning": 0.10, "onnx": 0.005, "onnx-int8": 0.02,
}
Z_ONE_SIDED_95 = 1.645
VerdictLabel = Literal["within budget", "over budget", "no budget"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass(frozen=True)
class Comparison:
    """A variant's measurement against its parent's, on the same held-out tokens and machine."""

    parent: Measurement
    variant: Measurement
    kl: KlStats | None = None

    @property
    def size_ratio(self) -> float | None:
        """Variant size on disk / parent's."""
        return _ratio(self.variant.size_bytes, self.parent.size_bytes)

    @property
    def ppl_ratio(self) -> float:
        """Variant perplexity / parent's."""
        return self.variant.perplexity / self.parent.perplexity

    @property
    def speed_ratio(self) -> float | None:
        """Variant decode tokens/s / parent's (> 1: faster); None when either was not measured."""
        return _ratio(self.variant.tokens_per_s, self.parent.tokens_per_s)

    @property
    def ttft_ratio(self) -> float | None:
        """Variant time to first token / parent's (< 1: faster)."""
        return _ratio(self.variant.ttft_ms, self.parent.ttft_ms)

    @property
    def load_ratio(self) -> float | None:
        """Variant load time / parent's."""
        return _ratio(self.variant.load_s, self.parent.load_s)

    @property
    def memory_ratio(self) -> float | None:
        """Variant peak memory growth while loading / parent's."""
        return _ratio(self.variant.peak_load_bytes, self.parent.peak_load_bytes)

    @property
    def ln_ratio_se(self) -> float:
        """Standard error of ln(ppl_ratio): paired from the KL stats, else the two errors combined (independent)."""
        if self.kl is not None and self.kl.ln_ratio_se is not None:
            return self.kl.ln_ratio_se
        return math.hypot(self.variant.perplexity_se / self.variant.perplexity,
                          self.parent.perplexity_se / self.parent.perplexity)

    @property
    def ppl_ratio_upper(self) -> float:
        """One-sided 95% upper bound of the perplexity ratio."""
        return math.exp(math.log(self.ppl_ratio) + Z_ONE_SIDED_95 * self.ln_ratio_se)

    def ratios(self) -> dict[str, float | None]:
        """Every ratio by name, for a report."""
        return {"size": self.size_ratio, "perplexity": self.ppl_ratio, "perplexity_upper": self.ppl_ratio_upper,
                "speed": self.speed_ratio, "ttft": self.ttft_ratio, "load": self.load_ratio,
                "memory": self.memory_ratio}

    def versus(self) -> dict[str, Any]:
        """The variant against its parent as one flat JSON object (a stored report's `versus`): each ratio as
        `<name>_ratio` (`size_ratio`, `ppl_ratio`, `ppl_ratio_upper`, `speed_ratio`, ...) and the KL stats
        (`kl_mean`, `kl_se`, `kl_p99`, `top1_agreement`, ...; absent without them)."""
        ratios = {"size_ratio": self.size_ratio, "ppl_ratio": self.ppl_ratio, "ppl_ratio_upper": self.ppl_ratio_upper,
                  "speed_ratio": self.speed_ratio, "ttft_ratio": self.ttft_ratio, "load_ratio": self.load_ratio,
                  "memory_ratio": self.memory_ratio}
        return {**ratios, **(self.kl.to_dict() if self.kl else {})}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: both measurements, the KL stats and (for readers, ignored by from_dict) the ratios."""
        return {"parent": self.parent.to_dict(), "variant": self.variant.to_dict(),
                "kl": self.kl.to_dict() if self.kl else None, "ratios": self.ratios()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        """Rebuild from `to_dict`'s dict."""
        return cls(parent=Measurement.from_dict(data["parent"]), variant=Measurement.from_dict(data["variant"]),
                   kl=KlStats.from_dict(data["kl"]) if data.get("kl") else None)


@dataclass(frozen=True)
class Budget:
    """The largest perplexity increase a variant may show (a fraction: 0.02 is +2%), or None for no budget."""

    max_ppl_increase: float | None
    kind: str | None = None  # the kind whose default it is (DEFAULT_BUDGETS), None when a person set it
    asked: bool = False  # set by a person (preserveAccuracy as a number)

    @classmethod
    def of(cls, kind: str, preserve_accuracy: bool | float = True) -> Budget:
        """The budget of a kind of variant: its default (True), none (False) or a person's percent (a number).

        Raises ValueError for an unknown kind with the default, or a negative percent.
        """
        if preserve_accuracy is False:
            return cls(None, kind)
        if preserve_accuracy is True:
            if kind not in DEFAULT_BUDGETS:
                raise ValueError(f"no default budget for {kind!r}: one of {', '.join(DEFAULT_BUDGETS)}")
            return cls(DEFAULT_BUDGETS[kind], kind)
        if preserve_accuracy < 0:
            raise ValueError(f"a perplexity budget cannot be negative ({preserve_accuracy:g}%)")
        return cls(float(preserve_accuracy) / 100, kind, asked=True)

    def describe(self) -> str:
        """`the +2% budget for 8-bit`, `your +1% budget`, or `no budget`."""
        if self.max_ppl_increase is None:
            return "no budget"
        figure = f"+{_percent(self.max_ppl_increase)}"
        if self.asked or not self.kind:
            return f"the {figure} budget you set"
        return f"the {figure} budget for {self.kind}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        """Rebuild from `to_dict`'s dict."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


class Verdict(NamedTuple):
    """Whether a variant keeps within its budget, and one line saying so with the figures (`label, reason = ...`)."""

    label: VerdictLabel
    reason: str

    @property
    def within(self) -> bool:
        """Offered as a drop-in: within its budget."""
        return self.label == "within budget"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return self._asdict()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        """Rebuild from `to_dict`'s dict."""
        return cls(label=data["label"], reason=data["reason"])


def _percent(fraction: float) -> str:
    """0.02 -> `2%`, 0.005 -> `0.5%`, 0.0123 -> `1.23%` (up to 2 decimals, no trailing zeros), 0.000004 ->
    `0.0004%` (one significant digit below 0.01%, so a small error never reads as none)."""
    if 0 < abs(fraction) < 0.0001:
        return f"{fraction * 100:.1g}%"
    return f"{fraction * 100:.2f}".rstrip("0").rstrip(".") + "%"


def verdict(comparison: Comparison, budget: Budget) -> Verdict:
    """Judge a comparison against a budget by the noise rule in the module docstring, with a one-line reason."""
    change = comparison.ppl_ratio - 1
    error = comparison.ln_ratio_se  # ln-ratio SE is the ratio's relative SE
    upper = comparison.ppl_ratio_upper - 1
    measured = (f"perplexity {figure_text(comparison.parent.perplexity)} → {figure_text(comparison.variant.perplexity)} "
                f"({percent_text(change, signed=True)} ± {percent_text(error)})")
    if budget.max_ppl_increase is None:
        return Verdict("no budget", f"{measured}; no budget was set")
    limit = budget.max_ppl_increase
    if upper <= limit:
        return Verdict("within budget", f"{measured}, at most {percent_text(upper, signed=True)}: within "
                                        f"{budget.describe()}")
    if change > limit:
        return Verdict("over budget", f"{measured}: over {budget.describe()}")
    return Verdict("over budget", f"{measured} could be up to {percent_text(upper, signed=True)}: not shown within "
                                  f"{budget.describe()} on {comparison.variant.tokens:,} tokens")
