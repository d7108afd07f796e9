"""Registry search at scale: filter + ranked text search over 10,000 models on SQLite, against a plain page query.

Builds a temporary SQLite database (migrated, WAL, as the embedded default runs it) with generated entries shaped
like Hugging Face listings: families, sizes, fine-tunes and quantizations by many authors, with tags, licences,
Zipf-like downloads and, for some, speed and accuracy figures; the 500 most downloaded are installed, chatted with
and rated (5,000 ratings, 20,000 analytics events, 20,000 hourly usage rows with tokens/s) so the rating and
recent-use sorts have data to join and the speed filter has measured figures to aggregate. The query
kinds run interleaved, so machine noise hits all alike. The baseline is `list_models()`, the unfiltered first page
`/models list` shows. Prints a line per query kind, then a final JSON line:
{"models", "runs", "load_s", "baseline", "queries": {kind: {"median_ms", "p95_ms", "matches"}}, "worst_median_ms",
"goal_median_ms", "meets_goal"}.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select  # noqa: E402

from modelbay.engine.db.database import Database
from modelbay.engine.records import ModelQuery  # noqa: E402
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.db.schema.analytics import AnalyticsEvent, UsageHourly
from modelbay.engine.db.schema.chat import ChatSession, Feedback, Message
from modelbay.engine.db.schema.catalog import InstallState, Model, ModelVersion

MODELS = 10_000
USED = 500  # models with an installed version, chats, ratings and analytics events
RUNS = 200
GOAL_MS = 20.0

FAMILIES = [  # (name, author, license, category, sizes in billions)
    ("qwen2.5", "Qwen", "apache-2.0", "chat", [0.5, 1.5, 3, 7, 14, 32, 72]),
    ("qwen2.5-coder", "Qwen", "apache-2.0", "code", [0.5, 1.5, 3, 7, 14, 32]),
    ("llama-3.1", "meta-llama", "llama3.1", "chat", [8, 70, 405]),
    ("llama-3.2", "meta-llama", "llama3.2", "chat", [1, 3]),
    ("mistral", "mistralai", "apache-2.0", "chat", [7]),
    ("mixtral-8x7b", "mistralai", "apache-2.0", "chat", [47]),
    ("phi-3.5-mini", "microsoft", "mit", "chat", [3.8]),
    ("gemma-2", "google", "gemma", "chat", [2, 9, 27]),
    ("deepseek-coder", "deepseek-ai", "deepseek", "code", [1.3, 6.7, 33]),
    ("starcoder2", "bigcode", "bigcode-openrail-m", "code", [3, 7, 15]),
    ("codellama", "codellama", "llama2", "code", [7, 13, 34]),
    ("smollm2", "HuggingFaceTB", "apache-2.0", "chat", [0.135, 0.36, 1.7]),
    ("tinyllama", "TinyLlama", "apache-2.0", "chat", [1.1]),
    ("olmo-2", "allenai", "apache-2.0", "analysis", [7, 13]),
    ("granite-3.1", "ibm-granite", "apache-2.0", "analysis", [2, 8]),
    ("falcon3", "tiiuae", "falcon-llm-license", "chat", [1, 3, 7, 10]),
    ("bge", "BAAI", "mit", "embedding", [0.033, 0.109, 0.335]),
    ("e5", "intfloat", "mit", "embedding", [0.033, 0.109, 0.335]),
    ("all-minilm", "sentence-transformers", "apache-2.0", "embedding", [0.022, 0.033]),
    ("biomistral", "BioMistral", "apache-2.0", "domain", [7]),
    ("saul", "Equall", "mit", "domain", [7]),
    ("mythomax-l2", "Gryphe", "other", "creative", [13]),
    ("nous-hermes-2", "NousResearch", "apache-2.0", "creative", [7, 10.7]),
]
VARIANTS = {  # category -> (suffix, words for the description, tags)
    "chat": [("instruct", "instruction-tuned assistant", ["instruct", "conversational"]),
             ("chat", "chat model tuned for dialogue", ["chat", "conversational"]), ("base", "base model", ["base"])],
    "code": [("instruct", "code assistant that follows instructions", ["code", "instruct"]),
             ("base", "code completion base model", ["code", "completion"])],
    "analysis": [("instruct", "assistant for analysis, summaries and extraction", ["instruct", "rag"]),
                 ("base", "base model for reasoning and analysis", ["base", "reasoning"])],
    "embedding": [("v1.5", "sentence embeddings for retrieval and similarity", ["embeddings", "retrieval"]),
                  ("small", "compact sentence embedding model", ["embeddings", "sentence-similarity"])],
    "domain": [("instruct", "domain-adapted assistant", ["medical", "instruct"]),
               ("base", "domain-adapted base model", ["legal", "base"])],
    "creative": [("roleplay", "storytelling and roleplay fine-tune", ["roleplay", "creative-writing"]),
                 ("writer", "long-form fiction writing model", ["creative-writing", "story"])],
}
FINE_TUNES = ["", "", "", "-dpo", "-sft", "-uncensored", "-abliterated", "-function-calling", "-math", "-german",
              "-japanese", "-rag", "-longctx"]
QUANTS = [("", 2.0, "safetensors"), ("-gguf", 0.6, "gguf"), ("-awq", 0.55, "safetensors"),
          ("-gptq-int4", 0.55, "safetensors"), ("-int8", 1.05, "safetensors"), ("-mlx-4bit", 0.56, "safetensors")]
UPLOADERS = ["bartowski", "unsloth", "mlx-community", "TheBloke", "lmstudio-community", "NousResearch", "mradermacher",
             "cognitivecomputations", "teknium", "openchat", "h2oai", "Intel", "neuralmagic", "nvidia"]
EXTRA_TAGS = ["multilingual", "long-context", "tool-use", "math", "small", "cpu-friendly", "quantized", "gguf",
              "merge", "lora", "moe", "vision", "reasoning", "summarization", "translation", "safety"]
LANGUAGES = ["en", "zh", "fr", "de", "es", "ja", "ko", "ru", "pt", "it"]


def _size_label(billions: float) -> str:
    return f"{round(billions * 1000)}m" if billions < 1 else f"{billions:g}b"


def generate(count: int, seed: int = 7) -> list[dict]:
    """Return count distinct model entries, as registry.upsert takes them."""
    rng = random.Random(seed)
    entries: list[dict] = []
    seen: set[str] = set()
    while len(entries) < count:
        family, author, license_, category, sizes = rng.choice(FAMILIES)
        billions = rng.choice(sizes)
        suffix, blurb, tags = rng.choice(VARIANTS[category])
        tune = rng.choice(FINE_TUNES)
        quant, bytes_per_param, fmt = rng.choice(QUANTS)
        official = not tune and not quant and rng.random() < 0.5
        owner = author if official else rng.choice(UPLOADERS)
        base = f"{family}-{_size_label(billions)}-{suffix}{tune}{quant}"
        repo_id = f"{owner}/{base}"
        if repo_id.lower() in seen:
            continue
        seen.add(repo_id.lower())
        parameters = int(billions * 1e9 * rng.uniform(0.97, 1.03))
        extra = rng.sample(EXTRA_TAGS, rng.randint(0, 3)) + (["gguf", "quantized"] if fmt == "gguf" else [])
        what = f"{tune.strip('-').replace('-', ' ')} " if tune else ""
        how = f", quantized ({quant.strip('-')})" if quant else ""
        entries.append({
            "name": base.lower(),
            "display_name": base.replace("-", " ").title(),
            "repo_id": repo_id,
            "category": category,
            "tags": sorted(set(tags + extra)),
            "description": f"{family.title()} {_size_label(billions).upper()} {what}{blurb} by {owner}{how}. "
                           f"Good for {rng.choice(['support bots', 'coding help', 'search', 'notes', 'agents'])}.",
            "author": owner,
            "license": license_,
            "parameter_count": parameters,
            "size_bytes": int(parameters * bytes_per_param),
            "context_length": rng.choice([2048, 4096, 8192, 32768, 131072]),
            "format": fmt,
            "pipeline_tag": "feature-extraction" if category == "embedding" else "text-generation",
            "languages": rng.sample(LANGUAGES, rng.randint(1, 4)),
            "downloads": int(rng.paretovariate(0.8) * 50),
            "likes": int(rng.paretovariate(1.0) * 3),
            "performance": {k: v for k, v in (
                ("tokens_per_s", round(rng.uniform(5, 200), 1) if rng.random() < 0.3 else None),
                ("accuracy", round(rng.uniform(0.3, 0.9), 3) if rng.random() < 0.2 else None),
            ) if v is not None},
        })
    return entries


def add_usage(db: Database, count: int, seed: int = 7) -> None:
    """Install, chat with and rate the count most downloaded models, so rating and recent-use sorts have data."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with db.session() as session:
        ids = session.scalars(select(Model.id).order_by(Model.downloads.desc()).limit(count)).all()
        versions = [ModelVersion(model_id=i, revision="main", install_state=InstallState.INSTALLED) for i in ids]
        session.add_all(versions)
        session.flush()
        chats = [ChatSession(platform="console", channel_id="bench", user_key="console:bench", model_version_id=v.id,
                             messages=[Message(role="assistant") for _ in range(10)]) for v in versions]
        session.add_all(chats)
        session.flush()
        session.execute(insert(Feedback), [
            {"message_id": m.id, "user_key": "console:bench", "rating": rng.choice((1, 1, 1, -1))}
            for chat in chats for m in chat.messages
        ])
        session.execute(insert(AnalyticsEvent), [
            {"event_type": "inference_complete", "model_version_id": v.id, "details": {},
             "created_at": start + timedelta(minutes=rng.randint(0, 500_000))}
            for v in versions for _ in range(40)
        ])
        session.execute(insert(UsageHourly), [  # what the speed filter aggregates: tokens/s measured here
            {"model_version_id": v.id, "hour": start + timedelta(hours=hour), "requests": 2,
             "tps_sum": rng.uniform(10, 300), "tps_count": 2}
            for v in versions for hour in range(0, 400, 10)
        ])


QUERIES: dict[str, ModelQuery] = {
    "text: qwen instruct": ModelQuery.parse("qwen instruct"),
    "text+tag: tag:code 7b": ModelQuery.parse("tag:code 7b"),
    "text: rare word (roleplay 13b)": ModelQuery.parse("roleplay 13b"),
    "text, no match": ModelQuery.parse("nonexistentmodelxyz"),
    "filters: category+license+max params": ModelQuery(category="chat", license="apache-2.0",
                                                       max_parameters=8_000_000_000),
    "filters: speed+accuracy+memory": ModelQuery(min_tokens_per_s=50, min_accuracy=0.5,
                                                 max_memory_bytes=16_000_000_000),
    "text+speed measured here: instruct speed:100": ModelQuery.parse("instruct speed:100"),
    "text+filters: llama author+size, by likes": ModelQuery.parse("llama author:bartowski", max_size_bytes=10**10,
                                                                  sort="likes"),
    "sort by downloads (no filter)": ModelQuery(sort="downloads"),
    "text sorted by size, page 3": ModelQuery.parse("instruct", sort="size", offset=50),
    "installed + text": ModelQuery.parse("instruct", installed=True),
    "sort by rating": ModelQuery(sort="rating"),
    "text sorted by recent use": ModelQuery.parse("chat", sort="recent"),
}


def _time(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 2)}


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        db = Database(f"sqlite:///{Path(home) / 'modelbay.db'}")
        db.upgrade()
        registry = Registry(db)
        start = time.perf_counter()
        registry.upsert_many(generate(MODELS), source="hub")
        add_usage(db, USED)
        load_s = time.perf_counter() - start
        hits = {kind: registry.search(query)[1] for kind, query in QUERIES.items()}  # also warms the cache
        samples: dict[str, list[float]] = {kind: [] for kind in QUERIES}
        baseline: list[float] = []
        for _ in range(RUNS):
            baseline.append(_time(registry.list_models))
            for kind, query in QUERIES.items():
                samples[kind].append(_time(lambda q=query: registry.search(q)))
        db.dispose()

    queries = {kind: {**_summary(s), "matches": hits[kind]} for kind, s in samples.items()}
    worst = max(q["median_ms"] for q in queries.values())
    result = {"models": MODELS, "runs": RUNS, "load_s": round(load_s, 2), "baseline": _summary(baseline),
              "queries": queries, "worst_median_ms": worst, "goal_median_ms": GOAL_MS, "meets_goal": worst <= GOAL_MS}
    print(f"{MODELS:,} models and usage loaded in {load_s:.1f} s; {RUNS} runs of each query on SQLite")
    print(f"{'baseline: list_models() first page':44} median {result['baseline']['median_ms']:6.2f} ms"
          f"   p95 {result['baseline']['p95_ms']:6.2f} ms")
    for kind, q in queries.items():
        print(f"{kind:44} median {q['median_ms']:6.2f} ms   p95 {q['p95_ms']:6.2f} ms   ({q['matches']:,} matches)")
    verdict = "met" if result["meets_goal"] else "MISSED"
    print(f"worst median {worst:.2f} ms against a goal of {GOAL_MS:.0f} ms: {verdict}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
