"""`lyricdist similarity train|eval|embed|score`: a siamese model (the MaLSTM, or its n-gram variant) that scores
how alike two lyrics are. `train` is configured by dataclasses (any key overridable); eval and score are typed
functions whose signatures are their options."""

from __future__ import annotations

from pathlib import Path


def cli_parser():
    from jsonargparse import ActionConfigFile

    from ..options import new_parser
    from ..config import TrackingConfig
    from .config import SimilarityDataConfig, SimilarityModelConfig, SimilarityTrainConfig

    p = new_parser("Siamese LSTM (MaLSTM) similarity of lyrics: train, eval, embed, score.")
    sub = p.add_subcommands(dest="command")

    train = new_parser("Train on song pairs (Last.fm similarity, or same/different artist). Any config key can be "
                       "overridden, e.g. --train.epochs 5.")
    train.add_argument("--config", action=ActionConfigFile, help="a YAML config (configs/similarity-malstm.yaml)")
    train.add_class_arguments(SimilarityDataConfig, "data")
    train.add_class_arguments(SimilarityModelConfig, "model")
    train.add_class_arguments(SimilarityTrainConfig, "train")
    train.add_class_arguments(TrackingConfig, "tracking")
    train.add_argument("--resume", action="store_true", help="continue the run in train.out_dir from its state")
    sub.add_subcommand("train", train, help="train a similarity model")

    from ..options import function_parser
    from .score import score
    from .train import evaluate

    ev = function_parser(evaluate)
    sub.add_subcommand("eval", ev, help="evaluate on held-out pairs")

    emb = new_parser("Song vectors -> PCA scatter plot (PNG, coloured by artist) and a JSON of the points.")
    emb.add_argument("checkpoint", help="a `similarity train` out_dir or checkpoint directory")
    emb.add_argument("--sources", type=list[str], default=[], help="songs to plot (default: the training sources)")
    emb.add_argument("--out", default="embedding.png", help="PNG to write (the points go beside it as .json)")
    emb.add_class_arguments(TrackingConfig, "tracking", skip={"log_checkpoints"})  # embed logs no checkpoints
    emb.set_defaults({"tracking.backend": "none"})
    sub.add_subcommand("embed", emb, help="plot song vectors")

    sc = function_parser(score)
    sc.add_argument("--out", default=None, help="also write the result as JSON here")
    sub.add_subcommand("score", sc, help="style attribution of a collaboration or a text")
    for name, parser in (("train", train), ("eval", ev), ("embed", emb), ("score", sc)):
        parser.prog = f"lyricdist similarity {name}"  # usage lines name the command as it is typed
    return p


def load_config(path: str | Path, overrides: list[str] | None = None):
    """A SimilarityConfig from a YAML file plus command-line style overrides (tests and scripts)."""
    parser = cli_parser()
    return _config_from_args(parser, parser.parse_args(["train", "--config", str(path), *(overrides or [])]))


def _config_from_args(parser, args):
    from .config import SimilarityConfig

    init = parser.instantiate(args).train
    return SimilarityConfig(data=init.data, model=init.model, train=init.train, tracking=init.tracking)


def cli_run(parser, args) -> int:
    from ..fileio import atomic_write_json

    from ..options import call

    cmd = args.command
    a = args[cmd]
    if cmd == "train":
        from accelerate import PartialState

        from ..run import TrainingStopped
        from .train import train

        try:
            metrics = train(_config_from_args(parser, args), resume=a.resume)
        except TrainingStopped as stopped:
            return 128 + stopped.signum
        if PartialState().is_main_process:
            print(f"final: test accuracy {metrics['test_accuracy']:.1%}, decile accuracy "
                  f"{metrics['test_decile_accuracy']:.1%} on {metrics['test_pairs']} held-out pairs")
    elif cmd == "eval":
        from .metrics import format_table
        from .train import evaluate

        print(format_table(call(evaluate, a)))
    elif cmd == "embed":
        from .config import SimilarityConfig
        from .embed import embed

        tracking = parser.instantiate(args).embed.tracking
        info = embed(a.checkpoint, list(a.sources) or None, a.out, SimilarityConfig(tracking=tracking))
        print(f"wrote {info['png']} ({info['songs']} songs; PCA explains "
              f"{sum(info['explained_variance']):.0%} of the variance)")
    elif cmd == "score":
        from .score import format_result, score

        result = call(score, a)
        print(format_result(result))
        if a.out:
            atomic_write_json(a.out, result)
    return 0
