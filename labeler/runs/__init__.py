"""Running labeling jobs: one runner for the CLI, the API, Celery workers, the demo and eval.

    spec.py     LabelSpec / JobSpec: what a job computes
    llms.py     the explainer and scorers of a spec, on a pool of LLM clients
    stages.py   one chunk: explain -> score -> save -> mark
    runner.py   Runner: create (reusing finished work), run, queue, retry, cancel, follow
    queue.py    Celery configuration and the sender (tasks by name; ``workers/`` runs them)
    demo.py     ``labeler demo``          evaluate.py  ``labeler eval``
"""
