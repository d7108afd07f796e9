"""Tiny Llama chat model factory: builds a real, loadable causal LM offline in seconds for tests."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# Bump whenever the corpus, tokenizer, architecture or training recipe changes, so stale caches are ignored.
FACTORY_VERSION = "1"

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Templates with rules, written like the real ones (raise_exception) but on the ChatML markers the tiny model knows.
# Gemma's refuses a system message and wants user and assistant turns to alternate, starting with the user.
GEMMA_LIKE_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Mistral's takes one leading system message, then the turns must alternate, starting with the user.
MISTRAL_LIKE_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}"
    "{{ '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>' + '\n' }}"
    "{% else %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a friendly bot that answers in one short sentence.",
    "Answer briefly and politely.",
]
MAX_SEQ_LEN = 128
BATCH_SIZE = 16
LEARNING_RATE = 3e-3
# Matmuls this small gain nothing from many cores and pay their synchronisation overhead.
MAX_TRAIN_THREADS = 4

CORPUS_SIZE = 400
COLORS = {
    "sky": "blue", "grass": "green", "sun": "yellow", "snow": "white", "coal": "black",
    "banana": "yellow", "apple": "red", "sea": "blue", "leaf": "green", "cloud": "white",
    "cherry": "red", "orange": "orange", "night": "black", "plum": "purple", "rose": "red",
}
SOUNDS = {
    "dog": "woof", "cat": "meow", "cow": "moo", "duck": "quack", "sheep": "baa",
    "owl": "hoot", "lion": "roar", "frog": "croak", "bee": "buzz", "horse": "neigh",
}
OPPOSITES = {
    "hot": "cold", "big": "small", "fast": "slow", "up": "down", "day": "night",
    "light": "dark", "old": "new", "happy": "sad", "open": "closed", "early": "late",
}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
PLACES = {
    "fish": "river", "bird": "tree", "book": "library", "car": "garage", "bread": "bakery",
    "cup": "kitchen", "pillow": "bedroom", "ship": "harbor", "plane": "airport", "train": "station",
    "student": "school", "doctor": "hospital", "farmer": "field", "painting": "museum", "monkey": "jungle",
    "camel": "desert", "penguin": "iceberg", "letter": "mailbox", "coin": "wallet", "flower": "garden",
}
ADJECTIVES = [
    "little", "large", "quiet", "noisy", "shiny", "dusty", "friendly", "sleepy", "clever", "brave",
    "gentle", "curious", "ancient", "modern", "golden", "silver", "wooden", "tired", "lucky", "famous",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]
TOPICS = {
    "water": "Water is a clear liquid that every living thing needs.",
    "the moon": "The moon circles the earth and shines at night.",
    "music": "Music is sound arranged into rhythm and melody.",
    "rain": "Rain is water that falls from clouds in drops.",
    "trees": "Trees are tall plants with wooden trunks and green leaves.",
    "computers": "Computers are machines that follow instructions very quickly.",
    "bread": "Bread is baked from flour, water and yeast.",
    "mountains": "Mountains are huge hills of rock that reach high into the sky.",
    "bicycles": "Bicycles are light vehicles with two wheels and pedals.",
    "winter": "Winter is the coldest season, often with snow and ice.",
    "summer": "Summer is the warmest season, with long sunny days.",
    "libraries": "Libraries are quiet buildings where people borrow books.",
    "gardens": "Gardens are places where people grow flowers and vegetables.",
    "oceans": "Oceans are vast bodies of salty water covering most of the planet.",
    "stars": "Stars are distant suns that twinkle in the night sky.",
    "chess": "Chess is a strategy game played on a board with sixty four squares.",
    "honey": "Honey is a sweet food that bees make from flower nectar.",
    "volcanoes": "Volcanoes are mountains that can erupt with hot lava and ash.",
    "robots": "Robots are machines that can sense, think and move on their own.",
    "friendship": "Friendship is a kind bond of trust between people.",
}
GREETINGS = {
    "Hello!": "Hello! How can I help you today?",
    "Hi there.": "Hi! What would you like to know?",
    "Good morning.": "Good morning! How can I help?",
    "Thank you!": "You are welcome. Happy to help.",
    "Who are you?": "I am a small helpful assistant.",
    "Goodbye.": "Goodbye! Have a nice day.",
}


@dataclass(frozen=True)
class TinyModelSpec:
    """Describes one tiny model variant; equal specs build identical models."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 256
    vocab_size: int = 1024
    max_position_embeddings: int = 512
    pretrain_steps: int = 0
    seed: int = 0


def _color_pair(rng: random.Random) -> tuple[str, str]:
    """Returns a question and answer about the color of a thing."""
    thing = rng.choice(sorted(COLORS))
    return f"What color is the {thing}?", f"The {thing} is {COLORS[thing]}."


def _sound_pair(rng: random.Random) -> tuple[str, str]:
    """Returns a question and answer about an animal sound."""
    animal = rng.choice(sorted(SOUNDS))
    article = "an" if animal[0] in "aeiou" else "a"
    return f"What sound does {article} {animal} make?", f"{article.capitalize()} {animal} says {SOUNDS[animal]}."


def _opposite_pair(rng: random.Random) -> tuple[str, str]:
    """Returns a question and answer about the opposite of a word."""
    word = rng.choice(sorted(OPPOSITES))
    return f"What is the opposite of {word}?", f"The opposite of {word} is {OPPOSITES[word]}."


def _count_pair(rng: random.Random) -> tuple[str, str]:
    """Returns a question and answer about adding two small numbers."""
    a, b = rng.randint(0, 5), rng.randint(0, 5)
    return (
        f"What is {NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]}?",
        f"{NUMBER_WORDS[a].capitalize()} plus {NUMBER_WORDS[b]} is {NUMBER_WORDS[a + b]}.",
    )


def _place_pair(rng: random.Random) -> tuple[str, str]:
    """Returns a question and answer about where a described thing is."""
    thing, adjective = rng.choice(sorted(PLACES)), rng.choice(ADJECTIVES)
    return f"Where is the {adjective} {thing}?", f"The {adjective} {thing} is in the {PLACES[thing]}."


def _next_pair(rng: random.Random) -> tuple[str, str]:
    """Returns a question and answer about which day or month comes next."""
    unit, names = rng.choice([("day", DAYS), ("month", MONTHS)])
    index = rng.randrange(len(names))
    following = names[(index + 1) % len(names)]
    return f"Which {unit} comes after {names[index]}?", f"The {unit} after {names[index]} is {following}."


def _topic_pair(rng: random.Random) -> tuple[str, str]:
    """Returns a request for a short explanation of a topic and that explanation."""
    topic = rng.choice(sorted(TOPICS))
    return f"Tell me about {topic}.", TOPICS[topic]


def _greeting_pair(rng: random.Random) -> tuple[str, str]:
    """Returns a greeting and its reply."""
    greeting = rng.choice(sorted(GREETINGS))
    return greeting, GREETINGS[greeting]


PAIR_MAKERS = [
    _color_pair, _sound_pair, _opposite_pair, _count_pair, _place_pair, _next_pair, _topic_pair, _greeting_pair,
]


def _conversation(rng: random.Random) -> list[dict[str, str]]:
    """Returns one synthetic conversation of one or two turns, sometimes with a system prompt."""
    messages = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < 0.5 else []
    for _ in range(1 if rng.random() < 0.75 else 2):
        question, answer = rng.choice(PAIR_MAKERS)(rng)
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages


def chat_corpus(seed: int = 0) -> list[list[dict[str, str]]]:
    """Returns the deterministic synthetic conversations, usable as a fine-tuning dataset."""
    rng = random.Random(seed)
    return [_conversation(rng) for _ in range(CORPUS_SIZE)]


def _corpus_texts(corpus: Sequence[list[dict[str, str]]]) -> Iterator[str]:
    """Yields every message text, plus the roles, so the tokenizer learns whole words for them."""
    yield from ("system", "user", "assistant")
    for messages in corpus:
        for message in messages:
            yield message["content"]


def _train_tokenizer(corpus: Sequence[list[dict[str, str]]], spec: TinyModelSpec) -> PreTrainedTokenizerFast:
    """Trains a byte-level BPE tokenizer on the corpus and wraps it with ChatML specials."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus_texts(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        # Chat-tuned convention (as in Qwen2.5-Instruct): a turn's end is the end of generation.
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=spec.max_position_embeddings,
    )


def _model_config(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """Returns the Llama config for the spec, with ids taken from the tokenizer."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.hidden_size // spec.num_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=False,
        dtype="float32",
        bos_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _generation_config(tokenizer: PreTrainedTokenizerFast) -> GenerationConfig:
    """Returns a greedy generation config that stops at the end of a turn or of the text."""
    return GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        eos_token_id=[tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(ENDOFTEXT)],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )


def chat_batch(
    tokenizer: PreTrainedTokenizerFast, conversations: Sequence[list[dict[str, str]]]
) -> dict[str, torch.Tensor]:
    """Encodes conversations as a padded causal-LM batch whose labels ignore padding."""
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    batch = tokenizer(
        texts, padding=True, truncation=True, max_length=MAX_SEQ_LEN,
        return_tensors="pt", add_special_tokens=False,
    )
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}


@contextlib.contextmanager
def _torch_threads(limit: int) -> Iterator[None]:
    """Caps torch's intra-op threads for the block and restores the caller's setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, limit))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _pretrain(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    corpus: Sequence[list[dict[str, str]]],
    steps: int,
    seed: int,
) -> None:
    """Trains the model in place on random batches of corpus conversations."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    # Linear decay lands the loss lower in few steps than a constant rate does.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    model.train()
    with _torch_threads(MAX_TRAIN_THREADS):
        for _ in range(steps):
            loss = model(**chat_batch(tokenizer, rng.sample(corpus, BATCH_SIZE))).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()


def _make_tokenizer_config_portable(out_dir: pathlib.Path) -> None:
    """Rewrites tokenizer_config.json so transformers 4.x (as pinned by vLLM) loads it too."""
    path = out_dir / "tokenizer_config.json"
    config = json.loads(path.read_text())
    # 4.x has no TokenizersBackend class; 5.x still maps this older name onto it.
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    # 4.x before chat_template.jinja existed reads the template only from here.
    config["chat_template"] = CHAT_TEMPLATE
    # 4.x expects a dict under 5.x's "extra_special_tokens"; both read this list key.
    config["additional_special_tokens"] = [IM_START]
    path.write_text(json.dumps(config, indent=2) + "\n")


def build_tiny_model(out_dir: pathlib.Path, spec: TinyModelSpec = TinyModelSpec()) -> pathlib.Path:
    """Builds, optionally pretrains, and saves a tiny Llama chat model with its tokenizer; returns out_dir."""
    out_dir = pathlib.Path(out_dir)
    corpus = chat_corpus(spec.seed)
    tokenizer = _train_tokenizer(corpus, spec)
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(_model_config(spec, tokenizer))
    model.generation_config = _generation_config(tokenizer)
    if spec.pretrain_steps:
        _pretrain(model, tokenizer, corpus, spec.pretrain_steps, spec.seed)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    _make_tokenizer_config_portable(out_dir)
    return out_dir


def _cache_root() -> pathlib.Path:
    """Returns the directory that holds cached tiny models."""
    configured = os.environ.get("MODELBAY_TEST_CACHE")
    return pathlib.Path(configured) if configured else pathlib.Path.home() / ".cache" / "modelbay-tests"


def _cache_key(spec: TinyModelSpec) -> str:
    """Returns a short hash of everything that changes the built files."""
    identity = json.dumps(
        {"spec": asdict(spec), "transformers": transformers.__version__, "factory": FACTORY_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def cached_tiny_model(spec: TinyModelSpec = TinyModelSpec()) -> pathlib.Path:
    """Returns a built model folder for the spec, building it once per machine."""
    root = _cache_root()
    final = root / f"tinymodel-{_cache_key(spec)}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    return _build_into(final, lambda staging: build_tiny_model(staging, spec))


def _build_into(final: pathlib.Path, build: Callable[[pathlib.Path], object]) -> pathlib.Path:
    """Builds a folder next to `final` and renames it into place, so readers never see a half-written one.

    A lock file beside it makes processes that want it at once (pytest-xdist workers) build it once between them;
    it is removed once the folder is there, for whoever comes later finds the folder and takes no lock.
    """
    lock_path = final.parent / f".{final.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when its process dies
        try:
            if not final.is_dir():  # else another process built it while this one waited
                _build_unlocked(final, build)
        finally:
            if final.is_dir():
                lock_path.unlink(missing_ok=True)
    return final


def _build_unlocked(final: pathlib.Path, build: Callable[[pathlib.Path], object]) -> None:
    """Builds into a private staging folder beside `final` and renames it into place."""
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent))
    try:
        build(staging)
        # mkdtemp makes the folder private; other users' processes (e.g. a server) must read it.
        staging.chmod(0o755)
        # rename is atomic, so readers never see a half-written folder.
        staging.rename(final)
    except OSError:
        # Another process won the race and already renamed its identical build into place.
        if not final.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def with_chat_template(source: pathlib.Path, template: str, name: str) -> pathlib.Path:
    """Returns a cached copy of a model folder whose chat template is replaced (both places transformers reads)."""
    key = hashlib.sha256(f"{source.name}\0{template}".encode()).hexdigest()[:16]
    final = _cache_root() / f"{name}-{key}"
    if final.is_dir():
        return final

    def build(staging: pathlib.Path) -> None:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        config_path = staging / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config["chat_template"] = template
        config_path.write_text(json.dumps(config, indent=2) + "\n")
        (staging / "chat_template.jinja").write_text(template)

    return _build_into(final, build)


def main(argv: Sequence[str] | None = None) -> None:
    """Builds a tiny model into the folder given on the command line."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.tinymodel", description=main.__doc__)
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--pretrain-steps", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    build_tiny_model(args.out_dir, TinyModelSpec(pretrain_steps=args.pretrain_steps, seed=args.seed))
    print(f"built {args.out_dir} in {time.perf_counter() - started:.1f}s")


CHAT_MODEL_SPEC = TinyModelSpec(pretrain_steps=300)
# The optimization benchmark's model (bench/optimize.py): about 28M parameters (8 blocks of hidden 512, MLP 1536), big
# enough that quantization and pruning change its size and speed measurably. 60 steps of the factory's recipe (batch
# 16) take 6 minutes or more on 2 cores (19 beside other sessions' test runs), once per machine (cached); a few hundred
# would take half an hour or more.
BENCH_MODEL_SPEC = TinyModelSpec(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=8, intermediate_size=1536,
                                 pretrain_steps=60)


@pytest.fixture(scope="session")
def tiny_model() -> pathlib.Path:
    """Provides the untrained tiny model folder."""
    return cached_tiny_model(TinyModelSpec())


@pytest.fixture(scope="session")
def tiny_chat_model() -> pathlib.Path:
    """Provides the tiny model pretrained to answer chat prompts and stop on its own."""
    return cached_tiny_model(CHAT_MODEL_SPEC)


@pytest.fixture(scope="session")
def tiny_gemma_model(tiny_chat_model: pathlib.Path) -> pathlib.Path:
    """Provides the tiny chat model with a Gemma-like template: no system role, strictly alternating turns."""
    return with_chat_template(tiny_chat_model, GEMMA_LIKE_TEMPLATE, "tiny-gemma")


@pytest.fixture(scope="session")
def tiny_mistral_model(tiny_chat_model: pathlib.Path) -> pathlib.Path:
    """Provides the tiny chat model with a Mistral-like template: one leading system message, then strict turns."""
    return with_chat_template(tiny_chat_model, MISTRAL_LIKE_TEMPLATE, "tiny-mistral")


if __name__ == "__main__":
    main()
