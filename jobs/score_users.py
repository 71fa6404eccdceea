"""spark-submit entrypoint for the score_users stage: `score_users.py --ds YYYY-MM-DD [--config FILE]`."""

import sys

from vrec.runner import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("score_users", sys.argv[1:]))
