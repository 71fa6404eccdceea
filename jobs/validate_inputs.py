"""spark-submit entrypoint for the validate_inputs stage: `validate_inputs.py --ds YYYY-MM-DD [--config FILE]`."""

import sys

from vrec.runner import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("validate_inputs", sys.argv[1:]))
