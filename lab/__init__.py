"""The lab: training, evaluation, masks, dataset, the official checkpoint reader and the bench.

It stands above the serving runtime (`backend`) and the editor side (`shared_protocol`): it imports
them, they never import it. It is not part of the installed package; `python -m backend <lab command>`
finds it in a source checkout (backend/cli.py).
"""
