"""spark-submit entrypoint for the evaluate stage: `evaluate.py --ds YYYY-MM-DD [--config FILE]`."""

import sys

from vrec.runner import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("evaluate", sys.argv[1:]))
