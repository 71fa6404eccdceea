"""spark-submit entrypoint for the build_recs stage: `build_recs.py --ds YYYY-MM-DD [--config FILE]`."""

import sys

from vrec.runner import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("build_recs", sys.argv[1:]))
