"""``ase-mpnn learn CONFIG.yaml``: active learning with a committee (explore with MD,
label the uncertain frames with a reference, fine-tune, repeat)."""

from __future__ import annotations

import argparse

from .options import integer

EXAMPLE = """\
example config (YAML; paths relative to the working directory):
  committee: emt-cuni-schnet-committee      # committee file or built-in name
  data: emt-cuni.extxyz                     # its training data (kept: no forgetting)
  seed_structures: [liquid.extxyz, {file: slabs.extxyz, temperatures_K: [600, 1200]}]
  temperatures_K: [1500, 2500]
  md_steps: 400
  timestep_fs: 2.0
  sample_interval: 10
  threshold: 0.15                           # eV/A, largest per-atom force std
  max_new_per_round: 20
  min_separation: 5                         # sampled frames between picks
  reference: emt                            # emt, xtb or module:Class
  rounds: 4
  finetune: {epochs: 200, max_minutes: 1.0}
  test_data: domain-test.extxyz
  output: al-run
"""


def _learn(args: argparse.Namespace) -> int:
    import yaml

    from ..training.active import ActiveConfig, learn

    with open(args.config) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{args.config} must hold a mapping of active-learning options")
    if args.resume:
        values["resume"] = True
    for key in ("output", "rounds"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.no_progress:
        values["progress"] = False
    learn(ActiveConfig.from_dict(values))
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``learn``."""
    parser = commands.add_parser(
        "learn", help="active learning: explore with a committee, label, fine-tune",
        description=__doc__.split("\n\n")[0], epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML file of options (see ActiveConfig)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed run in its output folder")
    parser.add_argument("--output", help="output folder (overrides the config)")
    parser.add_argument("--rounds", type=integer(0), help="fine-tuning rounds at most")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_learn)
