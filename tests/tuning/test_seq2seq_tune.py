"""Tuning an encoder-decoder (a tiny random T5 from ``tests.generation.tiny_t5``; no download): the
prompt/answer split matches inference token for token, every method trains and its adapter serves
through ``Seq2SeqGenerator``, unsupported settings fail in one line, and every strategy answers in an
app on the T5 with its tuned adapter. The trainer hands T5 runs to the seq2seq loop."""

from __future__ import annotations

import json

import pytest

from core.errors import ConfigError, InputError
from hybrid.generation import make_params
from hybrid.generation.seq2seq import Seq2SeqGenerator, load_seq2seq_model
from hybrid.tuning.seq2seq import to_pair, to_pairs, train_seq2seq
from tests.generation.tiny_t5 import build_t5_tokenizer, save_tiny_t5
from tests.tuning.conftest import tiny_cfg, write_rows

SP = "You are a test shop assistant."
Q = "How much does the Aster Trail tent cost?"


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return save_tiny_t5(tmp_path_factory.mktemp("tiny-t5") / "t5")


@pytest.fixture
def t5(t5_dir, one_thread):
    return load_seq2seq_model(t5_dir)


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cat_file(tmp_path):
    from hybrid.tuning.sample import catalogue_rows

    return write_rows(tmp_path / "cat.jsonl", catalogue_rows(n_products=12))


def cfg(*extra):
    # rows of the byte-level tiny tokenizer run longer than SmolLM2's: 192 tokens keeps every answer whole
    return tiny_cfg("data.max_length=192", *extra)


def user(text):
    return [{"role": "user", "content": text}]


def test_the_split_matches_inference_token_for_token():
    from hybrid.chat import encode_rendered, render_chat
    from hybrid.tuning.data import encode_chat, parse_row

    tok = build_t5_tokenizer()
    msgs = [{"role": "user", "content": "Is the X1 in stock?"}, {"role": "assistant", "content": "Yes, two."},
            {"role": "user", "content": "And the price?"}, {"role": "assistant", "content": "49 euros."}]
    ex = encode_chat(parse_row({"messages": msgs}), tok, SP)
    pair = to_pairs([ex], tok)[0]
    # the encoder sees what inference renders for the turns before the last answer (EOS appended by
    # the tokenizer, as T5's does); the earlier answer is context there, not a target
    assert pair.encoder_ids == encode_rendered(tok, render_chat(tok, msgs[:-1], SP))
    assert pair.encoder_ids[-1] == tok.eos_token_id
    assert tok.decode(pair.label_ids[:-1]).strip() == "49 euros."
    assert pair.label_ids[-1] == tok.eos_token_id
    assert pair.n_targets == len(pair.label_ids) and len(pair) == len(pair.encoder_ids) + len(pair.label_ids)
    # an example whose loss starts at its first token has no prompt for the encoder
    assert to_pair(type(ex)(ex.input_ids, [True] * len(ex)), [], [], tok.eos_token_id) is None


def test_lora_trains_saves_a_seq2seq_adapter_and_serves_it(tmp_path, t5, t5_dir, cat_file):
    model, tok = t5
    out = tmp_path / "adapters" / "shop"
    res = train_seq2seq(cfg("train.max_steps=12", "train.eval_every=6", "train.log_every=6", "train.lr=0.02"),
                        [cat_file], out, model=model, tokenizer=tok)
    assert [s for s, _ in res.eval_history] == [0, 6, 12]
    assert res.eval_history[-1][1] < res.eval_history[0][1] - 1.0  # it learns: eval loss falls by > 1 nat
    assert {"adapter_model.safetensors", "adapter_config.json", "adapter_card.json", "metrics.jsonl",
            "tune_config.json"} <= {p.name for p in out.iterdir()}
    conf = json.loads((out / "adapter_config.json").read_text())
    assert conf["task_type"] == "SEQ_2_SEQ_LM"
    # the config kept the Llama default targets; T5's own projections were adapted instead
    assert set(conf["target_modules"]) == {"q", "k", "v", "o", "wi", "wo"}
    from hybrid.chat import system_prompt_hash
    from hybrid.models import weights_sha
    from hybrid.tuning.card import read_card

    card = read_card(out)
    assert card.base_model_sha == weights_sha(t5_dir) and card.extra["architecture"] == "encoder-decoder"
    assert card.system_prompt_hash == system_prompt_hash(SP) and card.steps == 12
    assert card.eval_loss == res.eval_history[-1][1] and card.tokens_seen == res.tokens_seen > 0

    gen = Seq2SeqGenerator(str(t5_dir), bf16=False, system_prompt=SP)
    gen.load_adapter("shop", out)  # the card's base model hash matches the loaded T5
    # served by name, the adapter makes a training answer likelier than the base model does
    row = json.loads(cat_file.read_text().splitlines()[0])["messages"]
    enc = gen.tokenizer(gen.render(row[:1]))["input_ids"]
    labels = gen.tokenizer(f" {row[1]['content']}\n", add_special_tokens=False)["input_ids"] + [gen.tokenizer.eos_token_id]
    assert answer_loss(gen, enc, labels, "shop") < answer_loss(gen, enc, labels, None) - 1.0
    p = make_params(max_new_tokens=10)
    tuned = gen.generate(row[:1], adapter="shop", params=p)
    assert tuned.completion_tokens > 0 and tuned.text != gen.generate(row[:1], params=p).text
    with gen.stream(row[:1], adapter="shop", params=p) as s:
        assert "".join(s).strip() == tuned.text


def answer_loss(gen, enc, labels, adapter):
    """Mean token cross-entropy of ``labels`` given ``enc``, through the generator's own model."""
    import contextlib

    import torch

    ctx = gen.model.disable_adapter() if adapter is None else contextlib.nullcontext()
    if adapter is not None:
        gen.model.set_adapter(adapter)
    with ctx, torch.inference_mode():
        out = gen.model(input_ids=torch.tensor([enc]), labels=torch.tensor([labels]))
    return float(out.loss)


@pytest.mark.parametrize("method,extra", [
    ("ia3", []),
    ("prompt_tuning", ["prompt_tuning.num_virtual_tokens=4"]),
    ("prefix_tuning", ["prefix_tuning.num_virtual_tokens=4"]),
    ("full", ["train.lr=0.003"]),
])
def test_every_other_method_trains_and_serves(tmp_path, t5, t5_dir, cat_file, method, extra):
    model, tok = t5
    out = tmp_path / method
    res = train_seq2seq(cfg(f"method={method}", "train.max_steps=3", "train.eval_every=3", *extra),
                        [cat_file], out, model=model, tokenizer=tok)
    assert res.steps == 3 and res.eval_history[-1][1] < res.eval_history[0][1]
    p = make_params(max_new_tokens=6)
    if method == "full":  # a complete model directory: a base model of its own
        gen, name = Seq2SeqGenerator(str(out), bf16=False, system_prompt=SP), None
    else:
        assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "SEQ_2_SEQ_LM"
        gen, name = Seq2SeqGenerator(str(t5_dir), bf16=False, system_prompt=SP), method
        gen.load_adapter(method, out)
    g = gen.generate(user(Q), adapter=name, params=p)
    assert g.completion_tokens > 0
    with gen.stream(user(Q), adapter=name, params=p) as s:  # peft deep-copies prompt tuning's kwargs
        assert "".join(s).strip() == g.text


@pytest.mark.parametrize("extra,resume,match", [
    (["data.train_on_prompt=true"], False, "data.train_on_prompt"),
    (["train.save_every=2"], False, "train.save_every"),
    (["train.early_stopping_patience=1"], False, "train.early_stopping_patience"),
    ([], True, "--resume"),
])
def test_unsupported_settings_fail_in_one_line(t5, cat_file, extra, resume, match):
    model, tok = t5
    with pytest.raises(InputError, match=match) as e:
        train_seq2seq(cfg(*extra), [cat_file], None, model=model, tokenizer=tok, resume=resume)
    assert "encoder-decoder tuning does not support" in str(e.value) and "\n" not in str(e.value)


def test_a_data_mix_is_refused(t5, cat_file):
    model, tok = t5
    with pytest.raises(InputError, match="does not support data.mix"):
        train_seq2seq(_with_mix(cfg(), cat_file), [], None, model=model, tokenizer=tok)


def _with_mix(c, path):
    import dataclasses

    from hybrid.tuning.config import MixEntry

    return dataclasses.replace(c, data=dataclasses.replace(c.data, mix=[MixEntry(path=str(path))]))


def test_plain_text_rows_are_refused_with_their_lines(tmp_path, t5, cat_file):
    model, tok = t5
    rows = [json.loads(x) for x in cat_file.read_text().splitlines()[:20]]
    f = write_rows(tmp_path / "mixed.jsonl", rows + [{"text": "The Aster Trail tent is green. " * 3}])
    with pytest.raises(InputError, match=r"1 of \d+ training rows have no prompt .*line\(s\) 21"):
        train_seq2seq(cfg("data.eval_fraction=0"), [f], None, model=model, tokenizer=tok)


def test_a_causal_model_or_foreign_targets_are_refused(t5, cat_file):
    from tests.tuning.conftest import make_tiny_model

    model, tok = t5
    with pytest.raises(InputError, match="LlamaForCausalLM is not an encoder-decoder model"):
        train_seq2seq(cfg(), [cat_file], None, model=make_tiny_model(tok), tokenizer=tok)
    with pytest.raises(ConfigError, match=r"lora.target_modules \['q_proj'\] not found.*\bq\b"):
        train_seq2seq(cfg("lora.target_modules=[q_proj]"), [cat_file], None, model=model, tokenizer=tok)
    with pytest.raises(ConfigError, match="prompt_tuning.init_text is not supported"):
        train_seq2seq(cfg("method=prompt_tuning", "prompt_tuning.init_text=Answer briefly."), [cat_file], None,
                      model=model, tokenizer=tok)


def test_every_strategy_answers_on_a_t5_app_with_its_tuned_adapter(tmp_path, t5, t5_dir):
    from hybrid.app import load_app
    from hybrid.assemble import tune_config
    from hybrid.pipeline import Assistant
    from hybrid.strategies import STRATEGIES, strategy_names
    from tests.api.conftest import LEGAL_DOCS, LEGAL_EX, write_app

    d = write_app(tmp_path, "t5legal", LEGAL_DOCS, LEGAL_EX, model=str(t5_dir), max_new_tokens=8)
    (d / "app.yaml").write_text((d / "app.yaml").read_text() + "adapter:\n  path: adapter\n")
    app = load_app(d)
    model, tok = t5
    tc = tune_config(app, None, ["data.max_length=192", "train.max_steps=2", "train.progress=false",
                                 "train.tensorboard=false", "data.eval_fraction=0", "lora.r=4"])
    train_seq2seq(tc, [d / "examples.jsonl"], app.adapter_path, model=model, tokenizer=tok)

    bot = Assistant(app, generator=Seq2SeqGenerator(str(t5_dir), bf16=False))
    assert bot.excluded() == {}  # KB, examples and the adapter (trained on this T5) are all there
    assert bot.adapter == "t5legal"
    for name in strategy_names():
        ans = bot.ask("How much notice must a landlord give?", strategy=name)
        assert ans.strategy == name and ans.text.strip(), name
        if getattr(STRATEGIES.get(name), "generates", True):
            assert ans.usage["prompt_tokens"] > 0, name
    s = bot.stream("What is the deposit cap?", strategy="tuned_rag")
    pieces = list(s)
    assert s.answer is not None and s.answer.strategy == "tuned_rag" and "".join(pieces).strip()


def test_the_trainer_hands_encoder_decoder_models_to_the_seq2seq_loop(tmp_path, t5, cat_file):
    from hybrid.tuning.trainer import train

    model, tok = t5
    res = train(cfg("train.max_steps=2"), [cat_file], tmp_path / "a", model=model, tokenizer=tok)
    assert res.card.extra["architecture"] == "encoder-decoder"
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["task_type"] == "SEQ_2_SEQ_LM"
