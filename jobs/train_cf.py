"""spark-submit entrypoint for the train_cf stage: `train_cf.py --ds YYYY-MM-DD [--config FILE]`."""

import sys

from vrec.runner import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("train_cf", sys.argv[1:]))
