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

from modelbay.engine.optimization.measure import KlStats, Measurement

__all__ = ["DEFAULT_BUDGETS", "Z_ONE_SIDED_95", "Budget", "Comparison", "Verdict", "VerdictLabel", "table",
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


def _signed(fraction: float) -> str:
    return ("+" if fraction >= 0 else "-") + _percent(abs(fraction))


def verdict(comparison: Comparison, budget: Budget) -> Verdict:
    """Judge a comparison against a budget by the noise rule in the module docstring, with a one-line reason."""
    change = comparison.ppl_ratio - 1
    error = comparison.ln_ratio_se  # ln-ratio SE is the ratio's relative SE
    upper = comparison.ppl_ratio_upper - 1
    measured = (f"perplexity {comparison.parent.perplexity:.4g} → {comparison.variant.perplexity:.4g} "
                f"({_signed(change)} ± {_percent(error)})")
    if budget.max_ppl_increase is None:
        return Verdict("no budget", f"{measured}; no budget was set")
    limit = budget.max_ppl_increase
    if upper <= limit:
        return Verdict("within budget", f"{measured}, at most {_signed(upper)}: within {budget.describe()}")
    if change > limit:
        return Verdict("over budget", f"{measured}: over {budget.describe()}")
    return Verdict("over budget", f"{measured} could be up to {_signed(upper)}: not shown within "
                                  f"{budget.describe()} on {comparison.variant.tokens:,} tokens")


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{unit}"


def table(comparison: Comparison) -> list[tuple[str, str, str, str]]:
    """The report as rows of (figure, parent, variant, change) text, for a chat table."""
    from modelbay.engine.units import human_bytes_apart

    p, v, kl = comparison.parent, comparison.variant, comparison.kl

    def times(ratio: float | None) -> str:
        return _fmt(ratio, ".2f", "x")

    sizes = human_bytes_apart(p.size_bytes, v.size_bytes)
    memory = human_bytes_apart(p.peak_load_bytes, v.peak_load_bytes)
    rows = [
        ("size on disk", sizes[0], sizes[1], times(comparison.size_ratio)),
        ("peak memory to load", memory[0], memory[1], times(comparison.memory_ratio)),
        ("load time", _fmt(p.load_s, ".2f", " s"), _fmt(v.load_s, ".2f", " s"), times(comparison.load_ratio)),
        ("time to first token", _fmt(p.ttft_ms, ".1f", " ms"), _fmt(v.ttft_ms, ".1f", " ms"),
         times(comparison.ttft_ratio)),
        ("tokens/s", _fmt(p.tokens_per_s, ".1f"), _fmt(v.tokens_per_s, ".1f"), times(comparison.speed_ratio)),
        ("perplexity", f"{p.perplexity:.4g} ± {p.perplexity_se:.2g}", f"{v.perplexity:.4g} ± {v.perplexity_se:.2g}",
         f"{comparison.ppl_ratio:.4f}x"),
    ]
    if kl is not None:
        rows.append(("KL divergence (nats/token)", "", f"{kl.kl_mean:.3g} ± {kl.kl_se:.2g} (p99 {kl.kl_p99:.3g})",
                     f"{kl.tokens:,} tokens"))
        rows.append(("same top token", "", f"{kl.top1_agreement:.2%} ± {kl.top1_se:.2%}", ""))
    if p.sparsity is not None or v.sparsity is not None:
        rows.append(("sparsity", _fmt(p.sparsity, ".1%"), _fmt(v.sparsity, ".1%"), ""))
    return rows
