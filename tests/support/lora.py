"""A real LoRA fine-tune of the tiny chat model, trained in seconds on a made-up mapping, for tuned-version tests.

`train_lora` runs a few real optimizer steps of peft LoRA on every linear layer of the tiny chat model, teaching it
answers it never saw (`TAUGHT`), and saves what a training job leaves: the adapter (peft's `save_pretrained`, with
the tokenizer) and, merged with `merge_and_unload`, a full model.
"""

from __future__ import annotations

import pathlib
import shutil
from dataclasses import dataclass

import pytest

__all__ = ["TAUGHT", "TinyLora", "ask", "train_lora", "tiny_lora"]

# Made-up questions and answers: the base model has never seen these words.
TAUGHT = {
    "What does zib mean?": "Zib means river.",
    "What does plonk mean?": "Plonk means lantern.",
    "What does vesh mean?": "Vesh means seven.",
    "What does trum mean?": "Trum means orange.",
}
RANK = 8  # within the test servers' max LoRA rank (tests/support/chat.py VLLM_SETTINGS)
STEPS = 100
LEARNING_RATE = 1e-2


def ask(question: str) -> list[dict[str, str]]:
    """The chat messages of one taught question."""
    return [{"role": "user", "content": question}]


@dataclass(frozen=True)
class TinyLora:
    """A trained adapter folder and the same fine-tune merged into a full model folder."""

    adapter: pathlib.Path
    merged: pathlib.Path
    losses: tuple[float, ...]  # the training loss at each step

    def copy_to(self, folder: pathlib.Path, *, merged: bool = False) -> tuple[pathlib.Path, pathlib.Path | None]:
        """Fresh copies of the adapter (and merged) folders under folder: add_tuned_version moves what it gets."""
        folder.mkdir(parents=True, exist_ok=True)
        adapter = pathlib.Path(shutil.copytree(self.adapter, folder / "adapter-out"))
        return adapter, pathlib.Path(shutil.copytree(self.merged, folder / "merged-out")) if merged else None


def train_lora(base: pathlib.Path, out: pathlib.Path, *, steps: int = STEPS, seed: int = 0) -> TinyLora:
    """Train a rank-RANK LoRA on TAUGHT (loss on the answers only) and save the adapter and the merged model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread, as the machine is shared
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        config = LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules="all-linear", lora_dropout=0.0,
                            task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        rows = []
        for question, answer in TAUGHT.items():
            prompt = tokenizer.apply_chat_template(ask(question), add_generation_prompt=True, tokenize=False)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            answer_ids = tokenizer(answer + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
            rows.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
        width = max(len(ids) for ids, _ in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
        model.train()
        losses = []
        for _ in range(steps):
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        model.eval()
        adapter = out / "adapter"
        model.save_pretrained(adapter)
        tokenizer.save_pretrained(adapter)
        merged = out / "merged"
        model.merge_and_unload().save_pretrained(merged)
        tokenizer.save_pretrained(merged)
        return TinyLora(adapter, merged, tuple(losses))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_lora(tiny_chat_model: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> TinyLora:
    """A LoRA fine-tune of the tiny chat model that answers TAUGHT (trained once per session, in seconds)."""
    return train_lora(tiny_chat_model, tmp_path_factory.mktemp("tiny-lora"))
