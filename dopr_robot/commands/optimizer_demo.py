"""dopr-robot optimizer-demo: DoPr against its base on ill-conditioned linear regression."""

from dopr_robot.optimizer_demo import add_demo_arguments as add_arguments
from dopr_robot.optimizer_demo import run_demo as run

HELP = "DoPr vs its base optimizers on regression with ill-conditioned inputs"

__all__ = ["HELP", "add_arguments", "run"]
