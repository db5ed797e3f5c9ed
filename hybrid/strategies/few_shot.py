"""few_shot: the system prompt plus the k nearest examples (MMR for diversity), as prior chat turns.

k is capped by config (default 6: past about 6 examples gains stop) and by the token budget.
With chain of thought on, examples show ``Reasoning: ... Answer: ...`` and only the text after the
last ``Answer:`` is returned.
"""

from __future__ import annotations

import dataclasses
import re

from hybrid.strategies import STRATEGIES, guard
from hybrid.strategies.base import Prompt, StrategyContext, base_messages, count, run_prompt
from core.types import Answer

_ANSWER = re.compile(r"(?:^|\n)\s*\**answer\**\s*:\s*\**\s*", re.IGNORECASE)


def strip_reasoning(text: str) -> str:
    """Keep what follows the last 'Answer:' marker; without a marker, drop a leading 'Reasoning:' block."""
    parts = _ANSWER.split(text)
    if len(parts) > 1:
        return parts[-1].strip()
    return re.sub(r"^\s*reasoning\s*:.*?(\n\s*\n|$)", "", text, flags=re.IGNORECASE | re.DOTALL).strip()


@STRATEGIES.register("few_shot")
class FewShot:
    """Answer from the nearest worked examples.

    >>> FewShot().answer("How do I return shoes?", ctx)   # ctx: StrategyContext  # doctest: +SKIP
    """

    name = "few_shot"
    cost = 1.0  # base model, prompt grows with k examples
    uses_examples = True  # excluded while the example bank is empty

    def build(self, query: str, ctx: StrategyContext) -> Prompt:
        msgs = base_messages(ctx)
        user = {"role": "user", "content": query}
        notices: list[str] = []
        picked = []
        if ctx.examples is not None and len(ctx.examples) and ctx.query_vec is not None:
            picked = ctx.examples.select(ctx.query_vec, ctx.max_examples, ctx.mmr_lambda)
        shots: list[dict] = []
        used = 0
        for ex, _sim in picked:
            content = ex.answer
            if ctx.chain_of_thought and ex.reasoning:
                content = f"Reasoning: {ex.reasoning}\nAnswer: {ex.answer}"
            pair = [{"role": "user", "content": ex.question}, {"role": "assistant", "content": content}]
            # examples go before the history so the live conversation stays next to the question
            trial = [msgs[0], *shots, *pair, *msgs[1:], user]
            if count(ctx, trial) > ctx.budget:
                break
            shots.extend(pair)
            used += 1
        if used < len(picked):
            notices.append(f"used {used} of {len(picked)} examples to fit the {ctx.budget}-token budget")
        post = strip_reasoning if ctx.chain_of_thought else None
        params = None
        if shots:
            # The examples show how long an answer should be; a small model that has produced the
            # format and keeps going only repeats it. Cap at twice the longest shown answer.
            longest = max(count(ctx, [m]) for m in shots if m["role"] == "assistant")
            cap = min(ctx.params.max_new_tokens, 2 * longest + 16)
            if cap < ctx.params.max_new_tokens:
                params = dataclasses.replace(ctx.params, max_new_tokens=cap)
        if ctx.chain_of_thought:
            user = {"role": "user", "content": f"{query}\n\n(Give your reasoning, then 'Answer:' and the answer.)"}
        messages = [msgs[0], *shots, *msgs[1:], user]
        # control tokens in examples, history or the question: rendered harmless by render_chat
        notices.extend(guard.control_notice(messages, ctx.generator))
        return Prompt(messages=messages, notices=notices, postprocess=post, params=params)

    def answer(self, query: str, ctx: StrategyContext) -> Answer:
        return run_prompt(self.name, self.build(query, ctx), ctx)
