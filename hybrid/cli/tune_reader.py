"""``hybrid tune reader``: tune the extractive reader the ``extract`` strategy uses.

    hybrid tune reader --data squad-like.json --app apps/legal          # -> the app's reader path
    hybrid tune reader --data qa.jsonl --out runs/reader --epochs 2 --max-length 256
    hybrid tune reader --data qa.jsonl --out runs/reader --resume       # after an interrupted run
"""

from __future__ import annotations

import click


@click.command("reader")
@click.option("-d", "--data", "data", multiple=True, type=click.Path(dir_okay=False),
              help="SQuAD v1/v2 JSON or JSONL {question, context, answer[, answer_start]}; repeatable "
                   "[default with --app: the app's questions/train.jsonl].")
@click.option("-a", "--app", "app_dir", default=None, type=click.Path(file_okay=False),
              help="Write to this app's reader path (reader.path, default $HYBRID_CACHE/apps/<name>/reader).")
@click.option("-o", "--out", default=None, type=click.Path(file_okay=False),
              help="Reader directory to write (needed without --app).")
@click.option("--base", default=None, type=click.Path(file_okay=False),
              help="Encoder directory to start from [default: the bundled all-MiniLM-L6-v2].")
@click.option("--epochs", type=int, default=4, show_default=True,
              help="Passes over the data (PolicyQA train split, held-out titles: F1 0.29 after 2 at lr 1e-4, 0.39 after 4 at 2e-4).")
@click.option("--lr", type=float, default=2e-4, show_default=True,
              help="Peak learning rate (a sentence encoder's new QA head needs more than BERT's usual 3e-5).")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--max-length", type=int, default=256, show_default=True, help="Tokens per window.")
@click.option("--stride", type=int, default=96, show_default=True, help="Tokens shared by neighbouring windows.")
@click.option("--negatives", type=int, default=1, show_default=True,
              help="Answerless windows kept per question (long documents make many); -1 keeps all.")
@click.option("--eval-fraction", type=float, default=0.1, show_default=True,
              help="Share of questions held out, by whole title/context.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue after the newest finished epoch in OUT/checkpoints.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def reader(data: tuple[str, ...], app_dir: str | None, out: str | None, base: str | None, epochs: int, lr: float,
           batch_size: int, max_length: int, stride: int, negatives: int, eval_fraction: float, seed: int,
           resume: bool, quiet: bool) -> None:
    """Tune the extractive reader (a QA head on MiniLM) on question/context/answer data."""
    if app_dir is None and out is None:
        raise click.UsageError("hybrid tune reader needs --app DIR or --out DIR")
    if app_dir is not None:
        from hybrid.app import load_app

        app = load_app(app_dir)
        out = out or str(app.reader_path)
        if not data:  # what `hybrid app import` wrote: the train split, never dev or test
            default = app.resolve("questions/train.jsonl")
            if not default.is_file():
                raise click.UsageError(f"no --data and no {default}: pass --data FILE")
            data = (str(default),)
    if not data:
        raise click.UsageError("hybrid tune reader needs --data FILE (or --app DIR with questions/train.jsonl)")
    from hybrid.reader.train import train_reader

    result = train_reader(list(data), out, base=base, epochs=epochs, lr=lr, batch_size=batch_size,
                          max_length=max_length, stride=stride, seed=seed, eval_fraction=eval_fraction,
                          progress=not quiet, resume=resume, negatives=None if negatives < 0 else negatives)
    click.echo(summary(result.card, result.out))


def summary(card: dict, out) -> str:
    """The short table printed after training."""
    rows = card["rows"]
    lines = [f"rows kept        {rows['kept']} ({rows['unanswerable']} of them unanswerable: no-answer rows)"]
    for reason, n in rows["skipped_by_reason"].items():
        where = ", ".join(rows["skipped_examples"][reason][:3])
        more = ", ..." if n > 3 else ""
        lines.append(f"rows skipped     {n} {reason} ({where}{more})")
    lines.append(f"split            {card['train_questions']} train / {card['eval_questions']} eval questions "
                 f"({card['train_features']} training windows)")
    b, a = card.get("eval_before"), card.get("eval_after")
    if a:
        lines.append(f"eval EM          {b['em']:.3f} -> {a['em']:.3f}")
        lines.append(f"eval F1          {b['f1']:.3f} -> {a['f1']:.3f}")
    else:
        lines.append("eval             none (no eval split: --eval-fraction 0 or a single title)")
    c = card["calibration"]
    lines.append(f"calibration      P = sigmoid({c['a']:.3f} * margin + {c['b']:.3f})"
                 + ("" if c.get("fitted") else " (default, not fitted)"))
    lines.append(f"threshold        {card['threshold']:.3f} ({card['threshold_from']})")
    if card.get("quote"):
        lines.append(f"quote            {card['quote']} ({card.get('quote_from', '')})")
    speed = f", {card['features_per_s']:.1f} windows/s" if card.get("features_per_s") else ""
    lines.append(f"time             {card['seconds']:.0f} s ({card['steps']} steps{speed})")
    lines.append(f"reader           {out} (card: {out}/reader_card.json)")
    return "\n".join(lines)
