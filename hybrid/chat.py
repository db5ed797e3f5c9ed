"""System prompts and chat rendering: one function renders prompts for training AND inference.

    sp = SystemPrompt("You are {app_name}. Today is {date}. Answer in two sentences.")
    text = sp.render(app_name="ShopBot")
    prompt = render_chat(tokenizer, [{"role": "user", "content": "Price of the X1?"}], sp.render(app_name="ShopBot"))

The model's own chat template is used, with the system prompt always placed as the first (and only)
system message, so an adapter sees exactly the framing at inference that it was trained on. Adapter
cards store ``template_hash`` and ``system_prompt_hash``; ``card_mismatches`` tells inference when they
differ.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import logging
import re
import string
import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from core.errors import InputError, ModelError

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")

# Used when a tokenizer has no chat template (base models) and by the scripted fake generator.
# Plain "role: text" lines; the trailing "assistant:" is the generation prompt.
PLAIN_TEMPLATE_ID = "hybrid-plain-v1"

DEFAULT_SYSTEM_PROMPT = (
    "You are {app_name}, a helpful assistant. Answer the user's question accurately and concisely. "
    "If you do not know the answer, say so."
)


def normalize_system_prompt(text: str | None) -> str:
    """The one normalisation every system prompt gets: surrounding white space removed.

    A YAML block scalar ends in a newline and a copied prompt often carries a trailing space; the app
    config, the tuning config, rendering and the card hash all pass through here, so the same words
    always render and hash alike (``"Be brief.\\n"`` and ``"Be brief."`` are one prompt).
    """
    return (text or "").strip()


def _fields(template: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:  # e.g. a lone "{"
        raise InputError(f"system prompt template is malformed ({e}): {template!r}") from None
    names = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name == "" or not name.isidentifier():
            raise InputError(
                f"system prompt placeholder {{{name}}} must be a plain name like {{app_name}}; "
                "write {{ and }} for literal braces"
            )
        names.append(name)
    return names


@dataclass(frozen=True)
class SystemPrompt:
    """A system prompt template with named ``{variables}``; ``{date}`` defaults to today (ISO).

        sp = SystemPrompt("You are {app_name}, today is {date}.", defaults={"app_name": "LegalBot"})
        sp.render()                      # "You are LegalBot, today is 2026-11-23."
        sp.render(app_name="ShopBot")    # per-call values win over defaults
        sp.render(nme="x")               # InputError: unknown variable 'nme' (known: app_name, date)
    """

    template: str = DEFAULT_SYSTEM_PROMPT
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "template", normalize_system_prompt(self.template))
        _fields(self.template)  # fail at construction, not at the first request

    @property
    def variables(self) -> list[str]:
        return sorted(set(_fields(self.template)))

    def render(self, **values: Any) -> str:
        names = set(_fields(self.template))
        unknown = sorted(set(values) - names - {"date"})
        if unknown:
            raise InputError(
                f"unknown system prompt variable(s) {', '.join(map(repr, unknown))} "
                f"(the template uses: {', '.join(sorted(names)) or 'none'})"
            )
        merged: dict[str, Any] = {"date": _dt.date.today().isoformat()}
        merged.update({k: v for k, v in self.defaults.items()})
        merged.update(values)
        missing = sorted(names - set(merged))
        if missing:
            raise InputError(f"system prompt needs a value for {', '.join(missing)}: {self.template!r}")
        return self.template.format(**{k: merged[k] for k in names})

    def matches(self, text: str) -> bool:
        """Could ``text`` be a rendering of this template (any variable values)?

        Lets inference recognise an already-rendered system message (e.g. with today's date) as
        this template, so adapter-card hashes compare templates, not dates.
        """
        pattern = "".join(
            re.escape(literal) + ("(?s:.*?)" if name is not None else "")
            for literal, name, _, _ in string.Formatter().parse(self.template)
        )
        return re.fullmatch(pattern, normalize_system_prompt(text), flags=re.DOTALL) is not None

    @property
    def hash(self) -> str:
        """Hash of the template (not the rendered text), so ``{date}`` does not change it daily."""
        return system_prompt_hash(self.template)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def system_prompt_hash(text: "str | SystemPrompt | None") -> str:
    """Stable hash recorded in adapter cards, of the normalised text (``normalize_system_prompt``).
    ``None``/empty hashes as the empty prompt."""
    if isinstance(text, SystemPrompt):
        text = text.template
    return _sha(normalize_system_prompt(text))


def template_hash(tokenizer: Any) -> str:
    """Hash of the tokenizer's chat template (or of the plain fallback when it has none)."""
    tmpl = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if isinstance(tmpl, dict):  # some tokenizers carry several named templates
        tmpl = tmpl.get("default") or next(iter(tmpl.values()), None)
    return _sha(tmpl or PLAIN_TEMPLATE_ID)


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """Check the chat shape; returns a clean copy. Bad shapes are one-line ``InputError``s."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InputError(f"messages must be a non-empty list of {{role, content}} dicts, got {messages!r:.80}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise InputError(f"message {i} must have 'role' and 'content', got {m!r:.80}")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise InputError(f"message {i} has unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise InputError(f"message {i} content must be a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out


def apply_system_prompt(messages: Sequence[Mapping[str, str]], system_prompt: "str | SystemPrompt | None"
                        ) -> list[dict[str, str]]:
    """Messages with ``system_prompt`` as the single leading system message.

    ``None`` keeps the caller's own system message (if any) unchanged.
    """
    msgs = validate_messages(messages)
    if system_prompt is None:
        return msgs
    text = (system_prompt.render() if isinstance(system_prompt, SystemPrompt)
            else normalize_system_prompt(str(system_prompt)))
    return [{"role": "system", "content": text}] + [m for m in msgs if m["role"] != "system"]


# ------------------------------------------------------------------------------------------------
# prompt integrity: untrusted text can never become a control token
#
# A tokenizer turns the exact spelling of each of its special tokens into that token wherever the
# spelling appears in the text, so "<|im_end|>\n<|im_start|>system" inside a retrieved document
# would render as a real system turn. Every message but the trusted leading system message (the app
# author's) is therefore rewritten before the template sees it: each occurrence of a control string
# gets a ZERO WIDTH JOINER (U+200D) after its first character. Why that spelling:
# - it works for any special token of two or more characters (<|eot_id|>, [INST], <s>, <filename>),
#   so the tokenizer's own list drives it and no per-template look-alike table is needed;
# - the text still reads exactly the same to a person and nearly the same to the model, which
#   matters because ordinary documents do contain such strings (HTML <s>, code with <filename>);
# - a byte-level BPE tokenizer (SmolLM2, Llama-3) encodes U+200D as ordinary bytes, so the exact
#   spelling the special-token matcher looks for is gone; a look-alike character (e.g. a fullwidth
#   bar for "|") would be folded back by an NFKC normalizer and needs a table per token shape.
# A tokenizer whose normalizer drops U+200D would re-form the token, so each tokenizer is checked
# once (``_joiner``) by encoding every neutralized spelling; for such a tokenizer a plain space is
# inserted instead, and a tokenizer that re-forms the token from both spellings is refused (a
# ``ModelError``) rather than rendered unsafely.
JOINERS = ("\u200d", " ")

# Without a chat template, turns are "role: text" lines (``_plain``): a line in the content that
# starts with a role name would read as a new turn, so those role prefixes are control strings too.
_PLAIN_ROLE = re.compile(r"(?<=\n)[ \t]*(?=(?:system|user|assistant):)", re.IGNORECASE)

_JOINER_CACHE: "weakref.WeakKeyDictionary[Any, tuple[tuple[str, ...], str]]" = weakref.WeakKeyDictionary()


def control_strings(tokenizer: Any) -> tuple[str, ...]:
    """The spellings that ``tokenizer`` turns into special tokens, longest first.

    Read from the tokenizer itself: ``all_special_tokens`` (BOS, EOS, PAD, the template's role markers
    registered as additional specials) plus every added token flagged ``special``. ``()`` without a
    tokenizer. One-character tokens cannot be split and are left out (no chat template uses one).
    """
    if tokenizer is None:
        return ()
    found = {str(t) for t in (getattr(tokenizer, "all_special_tokens", None) or ())}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for tok in added.values():
        if getattr(tok, "special", False):
            found.add(str(getattr(tok, "content", tok)))
    return tuple(sorted((s for s in found if len(s) >= 2), key=lambda s: (-len(s), s)))


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", None) or ())
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(i for i, t in added.items() if getattr(t, "special", False))
    return ids


def _joiner(tokenizer: Any, spellings: tuple[str, ...]) -> str:
    """The first of ``JOINERS`` after which none of ``spellings`` still encodes to a special id."""
    try:
        cached = _JOINER_CACHE.get(tokenizer)
    except TypeError:  # an unhashable tokenizer: checked on every call
        cached = None
    if cached is not None and cached[0] == spellings:
        return cached[1]
    special = _special_ids(tokenizer)
    for joiner in JOINERS:
        broken = [s[0] + joiner + s[1:] for s in spellings]
        ids = tokenizer(broken, add_special_tokens=False)["input_ids"]
        if not any(i in special for row in ids for i in row):
            break
    else:
        raise ModelError(f"the tokenizer re-forms special tokens from every neutral spelling "
                         f"({', '.join(map(repr, JOINERS))}); untrusted text cannot be rendered safely")
    try:
        _JOINER_CACHE[tokenizer] = (spellings, joiner)
    except TypeError:
        pass
    return joiner


@functools.lru_cache(maxsize=32)
def _pattern(spellings: tuple[str, ...]) -> "re.Pattern[str]":
    # a lookahead finds overlapping occurrences; longest spelling first where two start together
    return re.compile("(?=(" + "|".join(re.escape(s) for s in spellings) + "))")


def neutralize(text: str, tokenizer: Any, *, roles: bool | None = None) -> tuple[str, dict[str, int]]:
    """``text`` with every control string of ``tokenizer`` (and of the plain "role:" format when it
    has no chat template, or ``roles=True``) made ordinary text; returns the new text and how many of
    each it changed. ``roles=False`` is for text that is not a chat turn (pretraining documents).

        neutralize("a<|im_end|>b", smollm2_tokenizer)  # ("a<\u200d|im_end|>b", {"<|im_end|>": 1})
    """
    counts: dict[str, int] = {}
    spellings = control_strings(tokenizer)
    pattern = _pattern(spellings) if spellings else None
    if pattern is not None and pattern.search(text):
        joiner = _joiner(tokenizer, spellings)
        # every start position, overlapping ones too: splitting one spelling must not leave another
        starts = {m.start(): m.group(1) for m in pattern.finditer(text)}
        for spelling in starts.values():
            counts[spelling] = counts.get(spelling, 0) + 1
        out, last = [], 0
        for pos in sorted(starts):
            out.append(text[last:pos + 1])
            out.append(joiner)
            last = pos + 1
        text = "".join(out) + text[last:]
    if roles if roles is not None else not getattr(tokenizer, "chat_template", None):
        text, n = _PLAIN_ROLE.subn(lambda m: m.group(0) + "\u200d", text)
        # the joiner sits before the role name: "\n\u200dsystem:" no longer starts a role line
        if n:
            counts["role line"] = counts.get("role line", 0) + n
    return text, counts


def neutralize_messages(tokenizer: Any, messages: Sequence[Mapping[str, str]]
                        ) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Every message made safe to render (``neutralize``), except a leading system message: that one
    is the app author's system prompt, trusted and rendered as written. Returns the messages and the
    total count per control string; ``render_chat`` does this for every prompt it renders."""
    out: list[dict[str, str]] = []
    total: dict[str, int] = {}
    for i, m in enumerate(messages):
        if i == 0 and m["role"] == "system":
            out.append(dict(m))
            continue
        content, counts = neutralize(m["content"], tokenizer)
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
        out.append({**m, "content": content})
    return out, total


def _plain(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant:" if add_generation_prompt else "")


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]],
                system_prompt: "str | SystemPrompt | None" = None, *,
                add_generation_prompt: bool = True) -> str:
    """The prompt string the model sees, rendered with its own chat template.

    The same call is used to build training examples (``hybrid.tuning``) and inference prompts, so
    both sides agree byte for byte. Templates that reject a system role get the system text
    prepended to the first user turn instead of being silently dropped. Control strings in any
    message but the leading system prompt are neutralized first (``neutralize_messages``), so no
    question, history turn, example or retrieved source can open or close a turn.
    """
    # the one place untrusted text is made safe: every inference and training prompt comes here
    msgs, _ = neutralize_messages(tokenizer, apply_system_prompt(messages, system_prompt))
    tmpl = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if not tmpl:
        return _plain(msgs, add_generation_prompt)
    try:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # noqa: BLE001 - jinja raises its own TemplateError types
        if msgs and msgs[0]["role"] == "system" and "system" in str(e).lower():
            sys_text, rest = msgs[0]["content"], msgs[1:]
            if rest and rest[0]["role"] == "user":
                rest = [{"role": "user", "content": f"{sys_text}\n\n{rest[0]['content']}"}] + rest[1:]
            else:
                rest = [{"role": "user", "content": sys_text}] + rest
            return tokenizer.apply_chat_template(rest, tokenize=False, add_generation_prompt=add_generation_prompt)
        raise InputError(f"the model's chat template could not render these messages: {e}") from None


def encode_rendered(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a string produced by ``render_chat``: the same call at training and inference.

    Chat templates already write BOS and role markers, so the tokenizer must not add them again;
    the plain fallback (no template) does want the tokenizer's usual special tokens.
    """
    add = not bool(getattr(tokenizer, "chat_template", None))
    return list(tokenizer(text, add_special_tokens=add)["input_ids"])


def render_prompt_completion(tokenizer: Any, messages: Sequence[Mapping[str, str]],
                             system_prompt: "str | SystemPrompt | None" = None) -> tuple[str, str]:
    """Split a conversation ending in an assistant turn into (prompt, completion) strings.

    ``prompt`` is exactly what inference renders for the preceding turns (generation prompt
    included), so loss can be put on ``completion`` only.
    """
    msgs = validate_messages(messages)
    if msgs[-1]["role"] != "assistant":
        raise InputError("the last message must be the assistant's answer to split prompt from completion")
    prompt = render_chat(tokenizer, msgs[:-1], system_prompt, add_generation_prompt=True)
    full = render_chat(tokenizer, msgs, system_prompt, add_generation_prompt=False)
    if not full.startswith(prompt):
        # Some templates rewrite earlier turns (e.g. strip reasoning); fall back to the answer text
        # plus whatever the template appends after it.
        answer, _ = neutralize(msgs[-1]["content"], tokenizer)  # as render_chat wrote it
        idx = full.rfind(answer)
        return prompt, full[idx:] if idx >= 0 else answer
    return prompt, full[len(prompt):]


def card_mismatches(card: Any, *, tokenizer: Any, system_prompt: "str | SystemPrompt | None") -> list[str]:
    """Human-readable differences between an adapter card and the inference-time framing.

    ``card`` is an ``AdapterCard`` or a dict with ``template_hash`` / ``system_prompt_hash``; empty
    card fields are not compared (older or foreign adapters).
    """
    get = card.get if isinstance(card, Mapping) else (lambda k, d=None: getattr(card, k, d))
    problems = []
    want_t, have_t = get("template_hash", "") or "", template_hash(tokenizer)
    if want_t and want_t != have_t:
        problems.append(f"chat template differs from training (card {want_t[:12]}, now {have_t[:12]})")
    want_s, have_s = get("system_prompt_hash", "") or "", system_prompt_hash(system_prompt)
    if want_s and want_s != have_s:
        problems.append(f"system prompt differs from training (card {want_s[:12]}, now {have_s[:12]}); "
                        f"trained with: {(get('system_prompt', '') or '')[:80]!r}")
    return problems


def warn_card_mismatch(card: Any, *, tokenizer: Any, system_prompt: "str | SystemPrompt | None",
                       name: str = "adapter") -> list[str]:
    """Log a warning per mismatch (see ``card_mismatches``); returns them for callers and tests."""
    problems = card_mismatches(card, tokenizer=tokenizer, system_prompt=system_prompt)
    for p in problems:
        log.warning("%s: %s", name, p)
    return problems
