"""Microsoft's optimizer and schedule flags (its examples/NLG/src/optimizer.py); what they compute
is in optimizer.py. Apart from it so that a script's --help needs no torch."""
import argparse


def add_optimizer_params(parser: argparse.ArgumentParser):
    parser = parser.add_argument_group("optimizer and schedule")
    parser.add_argument("--lr", default=0.00001, type=float, help="learning rate")
    parser.add_argument("--weight_decay", default=0.01, type=float, help="weight decay rate")
    parser.add_argument("--correct_bias", action="store_true", help="correct adam bias term")
    parser.add_argument("--adam_epislon", "--adam_epsilon", dest="adam_epislon", default=1e-6,
                        type=float, help="adam epsilon (Microsoft's spelling kept)")
    parser.add_argument("--no_decay_bias", action="store_true",
                        help="no weight decay on biases and layer-norm weights")
    parser.add_argument("--adam_beta1", default=0.9, type=float, help="adam beta1 term")
    parser.add_argument("--adam_beta2", default=0.98, type=float, help="adam beta2 term")
    parser.add_argument("--scheduler", default="linear", type=str,
                        choices=["cosine", "inv_sqrt", "dev_perf", "constant", "linear", "cycle"],
                        help="lr scheduler to use")
    parser.add_argument("--max_step", type=int, default=None,
                        help="number of optimizer updates (default: from --max_epoch)")
    parser.add_argument("--max_epoch", type=int, default=None, help="max epoch of training")
    parser.add_argument("--warmup_step", type=int, default=0, help="linear warmup updates")
    parser.add_argument("--i_steps", type=str, default="0", help="cycle schedule: steps")
    parser.add_argument("--i_lrs", type=str, default="0.00025", help="cycle schedule: lrs")
