"""spark-submit entrypoint for the validate_outputs stage: `validate_outputs.py --ds YYYY-MM-DD [--config FILE]`."""

import sys

from vrec.runner import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("validate_outputs", sys.argv[1:]))
