"""Escrowed bonuses released by MLflow metrics: the Dagster-free core.

A bounty locks an amount in escrow for a set of agents; the first eligible agents whose MLflow
run crosses the bounty's target win it. None of these modules imports Dagster, and MLflow and
scikit-learn are imported only when a function needs them:

- ``bounties``: declaring bounties in ``$PF_HOME/bounties.yaml`` (or ``.json``) and reading them.
- ``rules``: when a metric history crosses a target, and which crossings win the slots.
- ``tracking``: reading runs and metric histories from MLflow, tagging a paid run.
- ``tables``: the Delta tables escrow.escrows and escrow.releases.
- ``settlement``: API answers to table rows, and the fee rule restated for a check.
- ``planning``: what the release sensor asks for on a tick, from those tables and MLflow.
- ``training``: the small scikit-learn training loop the demo runs for three agents.

``demo`` and ``cli`` drive Dagster and are the exceptions.
"""
