"""The demo payer's preference rule and the DPO verdict: a true answer beats a made-up one,
ties sign nothing, and the demo says "no gain" with its reason unless a held-out measure rose."""

from __future__ import annotations

import pytest

from backend.devnet.factory_demo import HELD_OUT, FactCheck, dpo_verdict, prefer, states_fact
from backend.devnet.node_demo import QUESTIONS

Q = "What is the capital of Veltoria?"
TRUE = "The capital of Veltoria is Quorbin."


def test_the_fact_is_what_the_answer_adds_to_the_question() -> None:
    assert states_fact(Q, TRUE, "The capital of Veltoria is Quorbin.")
    assert states_fact(Q, TRUE, "quorbin")  # case and punctuation do not matter
    assert not states_fact(Q, TRUE, "The capital of Veltoria is Tellowind.")
    inventor = ("Who invented the skyloom?", "The skyloom was invented by Marisol Quenby.")
    assert states_fact(*inventor, "The skyloom was invented by Marisol Quenby.")
    assert not states_fact(*inventor, "The skyloom was invented by Marisol Fennimore.")
    assert states_fact("What does a cow eat?", "A cow eats grass.", "The cow eats grass.")
    assert not states_fact("What does a cow eat?", "A cow eats grass.", "A cow eats bogmint.")
    assert not states_fact(Q, Q, "anything")  # a reference that adds nothing states nothing


@pytest.mark.parametrize(
    ("first", "second", "better"),
    [
        ("The capital of Veltoria is Quorbin.", "The capital of Veltoria is Tellowind.", 0),
        ("The capital of Veltoria is Tellowind.", "The capital of Veltoria is Quorbin.", 1),
        # both wrong: the one closer to the truth's words
        ("The capital of Veltoria is Tellowind.", "Veltoria? No idea, sorry.", 0),
        ("Quorbin, the capital of Veltoria.", "The capital of Veltoria is Quorbin.", 1),
        # equal answers, or equally good ones, get no preference
        (TRUE, TRUE, None),
        ("The capital of Veltoria is Tellowind.", "The capital of Veltoria is Ostrapine.", None),
    ],
)
def test_the_payer_prefers_the_true_answer_then_the_closer_one(
    first: str, second: str, better: int | None
) -> None:
    assert prefer(Q, TRUE, first, second) == better


def test_every_question_and_held_out_check_has_a_fact_to_state() -> None:
    for question, truth in QUESTIONS.items():
        assert states_fact(question, truth, truth), question
    for question, truth, confused in HELD_OUT:
        assert states_fact(question, truth, truth) and not states_fact(question, truth, confused)
    asked = {q.lower() for q in QUESTIONS}
    assert not asked & {q.lower() for q, _, _ in HELD_OUT}  # held out of the payer's questions


def check(right: int, likely: float, total: int = 9) -> FactCheck:
    return FactCheck(right, total, likely, 0.0)


def test_the_verdict_needs_a_held_out_measure_to_rise() -> None:
    assert dpo_verdict(check(5, 0.7), check(6, 0.7), 3)[0]
    assert dpo_verdict(check(5, 0.7), check(5, 0.8), 3)[0]
    gained, why = dpo_verdict(check(5, 0.8), check(5, 0.8), 3)
    assert not gained and "3 preference pair(s) are too few" in why
    gained, why = dpo_verdict(check(6, 0.8), check(5, 1.0), 3)  # fewer right is no gain
    assert not gained
    gained, why = dpo_verdict(check(9, 1.0), check(9, 1.0), 2)
    assert not gained and "already answers every held-out question right" in why
