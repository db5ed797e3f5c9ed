"""What steers a transformers ``generate`` call from outside the model, shared by the decoder-only
(``hybrid.generation.hf``) and seq2seq (``hybrid.generation.seq2seq``) generators:

    criteria = stop_criteria(tokenizer, prompt_len, ["\n\n"], cancel, counter)   # stop strings, cancel
    penalty = generated_repetition_penalty(1.1, prompt_len)                      # generated tokens only
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

__all__ = ["generated_repetition_penalty", "stop_criteria", "stop_in_tail"]


def stop_in_tail(tokenizer: Any, generated: Any, stop: Sequence[str]) -> bool:
    """Whether a stop string just completed in ``generated`` (the ids generated so far). Each token
    decodes to at least one character for practical tokenizers, so the last len(longest stop) + 2
    tokens always hold a stop string that just completed; only they are decoded."""
    if not stop:
        return False
    window = max(len(s) for s in stop) + 2
    tail = tokenizer.decode(generated[-window:], skip_special_tokens=True)
    return any(s in tail for s in stop)


def stop_criteria(tokenizer: Any, prompt_len: int, stop: Sequence[str], cancel: threading.Event,
                  counter: list[int]) -> Any:
    """A transformers StoppingCriteria for stop strings and cancellation (checked every token)."""
    import torch
    from transformers import StoppingCriteria

    class _Criteria(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            counter[0] += 1
            n = input_ids.shape[0]
            if cancel.is_set():
                return torch.ones(n, dtype=torch.bool, device=input_ids.device)
            done = torch.zeros(n, dtype=torch.bool, device=input_ids.device)
            if stop:
                for i in range(n):
                    done[i] = stop_in_tail(tokenizer, input_ids[i, prompt_len:], stop)
            return done

    return _Criteria()


def generated_repetition_penalty(penalty: float, prompt_len: int) -> Any:
    """A logits processor like transformers' ``repetition_penalty``, but over generated tokens only.

    transformers' own processor also penalizes every token of the prompt, so a grounded answer is
    pushed away from the very words of its sources: measured on an unseen shopping-review QA set,
    dropping it from 1.1 to 1.0 raised rag's token F1 from 0.070 to 0.108. Penalizing only what the
    model already said keeps loops in check and leaves copying from the prompt free. Rows are
    left-padded to one width, so the generated part starts at ``prompt_len`` in every row.
    """
    import torch
    from transformers import LogitsProcessor

    class _Penalty(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            new = input_ids[:, prompt_len:]
            if new.shape[1] == 0:
                return scores
            picked = torch.gather(scores, 1, new)
            picked = torch.where(picked < 0, picked * penalty, picked / penalty)
            return scores.scatter(1, new, picked)

    return _Penalty()
