"""``python -m eval.harness eval/configs/offline.yaml [--out DIR] [--db URL]``."""

from labeler.runs.evaluate import main

if __name__ == "__main__":
    main()
