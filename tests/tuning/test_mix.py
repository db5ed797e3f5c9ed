"""Multi-task mixes: per-micro-batch sampling by weight or temperature, counts per task in the card and
the tracked run, eval loss per task; bad mixes fail in one line."""

from __future__ import annotations

import json

import pytest

from core.errors import ConfigError, InputError
from hybrid.tuning.card import read_card
from hybrid.tuning.mix import MixStream, Task, probabilities
from hybrid.tuning.trainer import train
from tests.tuning.conftest import chat_row, tiny_cfg, write_rows


@pytest.fixture
def two_tasks(tmp_path):
    shop = write_rows(tmp_path / "shop.jsonl", [chat_row(f"Price of item {i}?", f"Item {i} costs {i * 3} euros.",
                                                          source=f"s{i % 6}") for i in range(40)])
    legal = write_rows(tmp_path / "legal.jsonl", [
        chat_row(f"May I cancel contract {i}?", f"Short answer: yes, within {i % 14 + 1} days. — Not legal advice.",
                 source=f"l{i % 6}") for i in range(30)])
    return shop, legal


def test_mix_trains_counts_tasks_and_reports_eval_loss_per_task(tmp_path, tokenizer, tiny_model, two_tasks,
                                                                monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = (tmp_path / "mlruns").as_uri()
    shop, legal = two_tasks
    out = tmp_path / "mixed"
    cfg = tiny_cfg("train.max_steps=8", "train.eval_every=4", "train.log_every=1", f"track.uri={store}",
                   f"data.mix=[{{path: {legal}, weight: 3, name: legal}}]")
    # the run's own --data file (shop) joins the mix with weight 1
    res = train(cfg, [shop], out, model=tiny_model, tokenizer=tokenizer)
    card = read_card(out)
    mix = card.extra["mix"]
    assert set(mix["tasks"]) == {"legal", "shop"}
    assert mix["tasks"]["legal"]["probability"] == pytest.approx(0.75)
    assert mix["tasks"]["shop"]["weight"] == 1.0
    drawn = sum(t["sampled_examples"] for t in mix["tasks"].values())
    assert mix["draws"] == 8 and drawn > 0
    assert sum(t["sampled_tokens"] for t in mix["tasks"].values()) == res.tokens_seen
    assert all(t["eval_examples"] > 0 and t["train_examples"] > 0 for t in mix["tasks"].values())
    by_task = card.extra["eval_loss_by_task"]
    assert set(by_task) == {"legal", "shop"}
    # the overall eval loss is the token-weighted mean of the tasks': it lies between them
    assert min(by_task.values()) <= card.eval_loss <= max(by_task.values())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_loss.legal" in r] == [0, 4, 8]
    assert {f.path for f in card.data} == {str(shop), str(legal)}
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=store)
    run = c.search_runs([c.get_experiment_by_name("hybrid-tune").experiment_id])[0]
    assert run.data.metrics["mix.legal.sampled_examples"] == mix["tasks"]["legal"]["sampled_examples"]
    assert len(c.get_metric_history(run.info.run_id, "eval_loss.shop")) == 3


def test_sampling_follows_the_weights_and_is_reproducible():
    def plan(examples, epoch, task):
        return [[[x]] for x in examples]  # one example per micro-batch

    tasks = [Task("a", "a", 3, ["a"] * 10, []), Task("b", "b", 1, ["b"] * 10, [])]
    for t, p in zip(tasks, probabilities([10, 10], [3, 1], 0)):
        t.probability = p
    state = {"epoch": 0, "batch": 0}
    drawn = [MixStream(tasks, plan, seed=7).next(state)[0][0] for _ in range(400)]
    n_a = drawn.count("a")
    assert 250 < n_a < 350  # expected 300; the draws are seeded, so this never flakes
    assert state["mix"]["examples"] == {"a": n_a, "b": 400 - n_a}
    again = {"epoch": 0, "batch": 0}
    stream = MixStream(tasks, plan, seed=7)
    assert [stream.next(again)[0][0] for _ in range(400)] == drawn


def test_temperature_sampling_flattens_towards_uniform():
    assert probabilities([100, 25], [1, 1], 1.0) == pytest.approx([0.8, 0.2])
    assert probabilities([100, 25], [1, 1], 2.0) == pytest.approx([2 / 3, 1 / 3])
    assert probabilities([100, 25], [0, 0], 1e6) == pytest.approx([0.5, 0.5], abs=1e-4)
    assert probabilities([100, 25], [1, 3], 0) == pytest.approx([0.25, 0.75])


def test_weights_summing_to_zero_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"data.mix weights must sum to a positive number, got \[0.0, 0.0\]") as e:
        tiny_cfg("data.mix=[{path: a.jsonl, weight: 0}, {path: b.jsonl, weight: 0}]")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"weight of a.jsonl must be a number >= 0, got -1.0"):
        tiny_cfg("data.mix=[{path: a.jsonl, weight: -1}, {path: b.jsonl, weight: 2}]")
    with pytest.raises(ConfigError, match=r"data.mix_temperature must be >= 0"):
        tiny_cfg("data.mix_temperature=-1")


def test_a_missing_mix_file_is_one_line_naming_it(tmp_path, tokenizer, tiny_model, two_tasks):
    shop, _ = two_tasks
    cfg = tiny_cfg(f"data.mix=[{{path: {tmp_path / 'gone.jsonl'}, weight: 1}}]")
    with pytest.raises(InputError, match=r"data.mix: task 'gone': file not found: .*gone.jsonl") as e:
        train(cfg, [shop], None, model=tiny_model, tokenizer=tokenizer)
    assert "\n" not in str(e.value)


def test_two_tasks_with_one_name_are_refused(tmp_path, tokenizer, tiny_model, two_tasks):
    shop, _ = two_tasks
    (tmp_path / "sub").mkdir()
    other = write_rows(tmp_path / "sub" / "shop.jsonl", [chat_row("q", "a")])
    with pytest.raises(InputError, match=r"data.mix task names must differ; repeated: shop"):
        train(tiny_cfg(f"data.mix=[{{path: {other}}}]"), [shop], None, model=tiny_model, tokenizer=tokenizer)
