"""spark-submit entrypoint for the embed_items stage: `embed_items.py --ds YYYY-MM-DD [--config FILE]`."""

import sys

from vrec.runner import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("embed_items", sys.argv[1:]))
