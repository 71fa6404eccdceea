"""spark-submit entrypoint for the build_interactions stage: `build_interactions.py --ds YYYY-MM-DD [--config FILE]`."""

import sys

from vrec.runner import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("build_interactions", sys.argv[1:]))
