"""Token ids and trained-token masks with the tiny chat model's tokenizer: chat (multi-turn), completion, text,
the over-length policies and templates that refuse a row."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelbay.engine.datasets.examples import Example, Message
from modelbay.engine.datasets.problems import Problem
from modelbay.engine.datasets.tokens import Encoded, Segment, encode, segments

SKY = Example(1, messages=(Message("user", "What color is the sky?"), Message("assistant", "The sky is blue.")))
TWO_TURNS = Example(7, messages=(Message("system", "Be brief."), Message("user", "What color is the sky?"),
                                 Message("assistant", "The sky is blue."), Message("user", "And grass?"),
                                 Message("assistant", "Green.")))


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _trained(tokenizer: Any, encoded: Encoded) -> list[str]:
    return [s.text for s in segments(tokenizer, encoded) if s.trained]


def test_a_chat_trains_the_answer_and_its_end_token_only(tokenizer: Any) -> None:
    encoded = encode(tokenizer, SKY, max_length=512, policy="drop")
    assert isinstance(encoded, Encoded)
    rendered = tokenizer.apply_chat_template(SKY.as_dicts(), tokenize=False)
    assert encoded.input_ids == _ids(tokenizer, rendered)  # the whole conversation, tokenised once, as rendered
    assert segments(tokenizer, encoded) == [
        Segment("<|im_start|>user\nWhat color is the sky?<|im_end|>\n<|im_start|>assistant\n", False),
        Segment("The sky is blue.<|im_end|>", True),
        Segment("\n", False),
    ]
    trained = [i for i, m in zip(encoded.input_ids, encoded.assistant_masks) if m]
    assert trained == _ids(tokenizer, "The sky is blue.") + [tokenizer.eos_token_id]  # <|im_end|> is the EOS


def test_every_assistant_turn_of_a_multi_turn_chat_is_trained_and_nothing_else(tokenizer: Any) -> None:
    encoded = encode(tokenizer, TWO_TURNS, max_length=512, policy="drop")
    assert isinstance(encoded, Encoded)
    assert _trained(tokenizer, encoded) == ["The sky is blue.<|im_end|>", "Green.<|im_end|>"]
    masked = "".join(s.text for s in segments(tokenizer, encoded) if not s.trained)
    assert "Be brief." in masked and "And grass?" in masked and "blue" not in masked and "Green" not in masked
    assert encoded.trained == len(_ids(tokenizer, "The sky is blue.")) + len(_ids(tokenizer, "Green.")) + 2
    assert "".join(s.text for s in segments(tokenizer, encoded)) == tokenizer.decode(encoded.input_ids)


def test_a_completion_masks_the_prompt_and_trains_the_completion_and_eos(tokenizer: Any) -> None:
    encoded = encode(tokenizer, Example(2, prompt="What is two plus two?", completion=" Four."), max_length=512,
                     policy="drop")
    assert isinstance(encoded, Encoded)
    prompt, answer = _ids(tokenizer, "What is two plus two?"), _ids(tokenizer, " Four.")
    assert encoded.input_ids == prompt + answer + [tokenizer.eos_token_id]
    assert encoded.assistant_masks == [0] * len(prompt) + [1] * (len(answer) + 1)


def test_a_text_row_trains_every_token(tokenizer: Any) -> None:
    encoded = encode(tokenizer, Example(3, text="Rain is water that falls from clouds."), max_length=512,
                     policy="drop")
    assert isinstance(encoded, Encoded)
    assert encoded.input_ids == _ids(tokenizer, "Rain is water that falls from clouds.") + [tokenizer.eos_token_id]
    assert set(encoded.assistant_masks) == {1}


def test_an_over_long_row_under_each_policy(tokenizer: Any) -> None:
    whole = encode(tokenizer, TWO_TURNS, max_length=512, policy="drop")
    assert isinstance(whole, Encoded)
    n = len(whole.input_ids)
    limit = n - 3  # the last answer loses its end
    assert encode(tokenizer, TWO_TURNS, max_length=limit, policy="drop") == Problem(
        7, "too_long", f"{n} tokens, more than max_length {limit}; left out (policy drop)")
    cut = encode(tokenizer, TWO_TURNS, max_length=limit, policy="truncate")
    assert isinstance(cut, Encoded) and cut.truncated and cut.length == n
    assert (cut.input_ids, cut.assistant_masks) == (whole.input_ids[:limit], whole.assistant_masks[:limit])
    failed = encode(tokenizer, TWO_TURNS, max_length=limit, policy="fail")
    assert isinstance(failed, Problem) and failed.fatal and failed.reason == "too_long"
    assert failed.message == (f"{n} tokens, more than max_length {limit}; the policy is fail, so training stops "
                              "(choose drop or truncate, or raise max_length)")
    assert encode(tokenizer, TWO_TURNS, max_length=n, policy="fail") == whole  # at the limit exactly: whole


def test_truncating_away_every_answer_token_leaves_the_row_out(tokenizer: Any) -> None:
    whole = encode(tokenizer, SKY, max_length=512, policy="drop")
    assert isinstance(whole, Encoded)
    first_answer = whole.assistant_masks.index(1)
    problem = encode(tokenizer, SKY, max_length=first_answer, policy="truncate")
    assert isinstance(problem, Problem) and problem.reason == "no_trained_tokens" and not problem.fatal
    assert "cut there (policy truncate) it keeps no answer token" in problem.message


def test_a_template_that_refuses_the_row_is_a_problem(gemma_tokenizer: Any) -> None:
    problem = encode(gemma_tokenizer, TWO_TURNS, max_length=512, policy="drop")
    assert problem == Problem(7, "template_refused", "the chat template says: System role not supported")
    assert isinstance(encode(gemma_tokenizer, SKY, max_length=512, policy="drop"), Encoded)


def test_no_template_or_one_that_rewrites_earlier_turns_is_refused(tokenizer: Any) -> None:
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    problem = encode(bare, SKY, max_length=512, policy="drop")
    assert isinstance(problem, Problem) and problem.reason == "template_refused"
    assert "has no chat template" in problem.message
    assert isinstance(encode(bare, Example(1, prompt="a", completion="b"), max_length=512, policy="drop"), Encoded)
    shifty = copy.deepcopy(tokenizer)  # the last message is rendered differently, as thinking models' templates do
    shifty.chat_template = ("{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['role'] }}: "
                            "{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    problem = encode(shifty, TWO_TURNS, max_length=512, policy="drop")
    assert isinstance(problem, Problem) and "renders earlier turns differently" in problem.message


class _Slow:
    """The tokenizer as a slow one looks to `encode`: no offsets (`is_fast` false); everything else the same."""

    is_fast = False

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, text: str, **kwargs: Any) -> Any:
        assert not kwargs.get("return_offsets_mapping")
        return self._inner(text, **kwargs)


@pytest.mark.parametrize("example", [SKY, TWO_TURNS])
def test_tokenizers_without_offsets_get_the_same_masks(tokenizer: Any, example: Example) -> None:
    assert encode(_Slow(tokenizer), example, max_length=512, policy="drop") == \
        encode(tokenizer, example, max_length=512, policy="drop")
