"""spark-submit entrypoint for every stage: `stage.py <stage> --ds YYYY-MM-DD [--config FILE]`
(the stages are declared in vrec/stages/__init__.py)."""

import sys

from vrec.executor import main

if __name__ == "__main__":
    sys.exit(main())
