"""``hybrid generate "prompt"``: one answer from the base model or a tuned adapter."""

from __future__ import annotations

import sys
from pathlib import Path

import click


def _resolve_adapter(value: str) -> tuple[str, Path]:
    """An adapter given as a directory, or as a name under ./adapters/ (where ``hybrid tune`` writes)."""
    from core.errors import InputError

    p = Path(value).expanduser()
    candidates = [p, Path("adapters") / value]
    for c in candidates:
        if c.is_dir():
            return c.resolve().name, c.resolve()
    raise InputError(f"adapter {value!r} not found (looked at {', '.join(str(c) for c in candidates)}); "
                     "pass an adapter directory written by `hybrid tune`")


def _card_system_prompt(card):
    """The adapter's training system prompt, with the variable values it was trained with."""
    from hybrid.chat import SystemPrompt

    data = ((card.hyperparameters or {}).get("config") or {}).get("data") or {}
    defaults = {k: v for k, v in {"app_name": data.get("app_name")}.items() if v}
    sp = SystemPrompt(card.system_prompt, defaults=defaults)
    sp.render()  # fail now, with the variable's name, rather than at the first token
    return sp


@click.command("generate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("prompt")
@click.option("-m", "--model", default="default", envvar="HYBRID_MODEL", show_default=True,
              help="Model name or local Hugging Face directory (env: HYBRID_MODEL).")
@click.option("-a", "--adapter", default=None, help="Adapter directory, or a name under ./adapters/.")
@click.option("-S", "--system", "system", default=None,
              help="System prompt. Default: the adapter's training system prompt, else the model's own.")
@click.option("-n", "--max-new-tokens", type=int, default=256, show_default=True, help="Upper bound on new tokens.")
@click.option("-t", "--temperature", type=float, default=0.0, show_default=True, help="0 means greedy decoding.")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling mass.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--stream/--no-stream", default=None, help="Print tokens as they come (default: when stdout is a TTY).")
@click.option("--trust-remote-code", is_flag=True, help="Allow a model directory's own Python code to run.")
def cli(prompt: str, model: str, adapter: str | None, system: str | None, max_new_tokens: int,
        temperature: float, top_p: float, seed: int, stop: tuple[str, ...], stream: bool | None,
        trust_remote_code: bool) -> None:
    """Answer PROMPT with the generator (embedded SmolLM2-135M-Instruct unless --model says otherwise).

    \b
    Examples:
      hybrid generate "What is the capital of France?"
      hybrid generate "Price of the X1?" --adapter adapters/shop
      hybrid generate "Hi" --system "You are a pirate." --temperature 0.8 --seed 3
    """
    from core.errors import InputError
    from hybrid.generation import make_params
    from hybrid.generation.seq2seq import pick_transformers_class

    if not prompt.strip():
        raise InputError("prompt is empty")
    from transformers.utils import logging as hf_logging

    # stdout/stderr carry the answer and one-line errors; a sub-second weight-loading bar is noise
    # (the one-time GGUF conversion still announces itself through our own log line).
    hf_logging.disable_progress_bar()
    params = make_params(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                         stop=list(stop))
    # a causal LM or an encoder-decoder (T5, BART) directory, by its config
    gen = pick_transformers_class(model)(model, system_prompt=system, trust_remote_code=trust_remote_code)
    name = None
    if adapter:
        name, path = _resolve_adapter(adapter)
        gen.load_adapter(name, path)
        card = gen.adapter_card(name)
        if system is None and card is not None and card.system_prompt:
            gen.system_prompt = _card_system_prompt(card)  # answer with the framing it was trained on
    messages = [{"role": "user", "content": prompt}]
    if stream is None:
        stream = sys.stdout.isatty()
    if stream:
        with gen.stream(messages, adapter=name, params=params) as s:
            for piece in s:
                click.echo(piece, nl=False)
        click.echo()
    else:
        click.echo(gen.generate(messages, adapter=name, params=params).text)
